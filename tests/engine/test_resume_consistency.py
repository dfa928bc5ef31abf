"""CheckpointSafetyHook refuses a distributed run whose ranks would resume from different
iterations (node-local work dirs: only node 0 has the checkpoints)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vvt_mm.engine import CheckpointSafetyHook, ResumeMismatchError
from vvt_mm.engine import checkpoint_safety_hook as module


def fake_world(monkeypatch, starts: list[int]) -> None:
    monkeypatch.setattr(module, 'get_world_size', lambda: len(starts))
    monkeypatch.setattr(module, 'all_gather', lambda t: [torch.tensor(s) for s in starts])


def test_ranks_at_different_iterations_are_named(monkeypatch):
    fake_world(monkeypatch, [6, 0, 6, 0])
    with pytest.raises(ResumeMismatchError) as err:
        CheckpointSafetyHook().before_train(SimpleNamespace(iter=6))
    assert str(err.value).startswith('the ranks would start training at different iterations '
                                     '(rank 1, 3 at iteration 0; rank 0, 2 at iteration 6): ')
    assert 'storage every node sees' in str(err.value)


def test_ranks_at_the_same_iteration_pass(monkeypatch):
    fake_world(monkeypatch, [6, 6])
    CheckpointSafetyHook().before_train(SimpleNamespace(iter=6))


def test_a_single_process_gathers_nothing(monkeypatch):
    monkeypatch.setattr(module, 'all_gather', lambda t: pytest.fail('no collective'))
    CheckpointSafetyHook().before_train(SimpleNamespace(iter=0))
