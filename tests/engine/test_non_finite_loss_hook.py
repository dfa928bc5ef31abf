"""NonFiniteLossHook: a NaN/Inf loss stops training before it is checkpointed; under a
dynamic loss scaler the skipped steps are counted instead."""
from __future__ import annotations

import json
import math

import pytest
import torch

from vvt_mm.engine import NonFiniteLossError, NonFiniteLossHook, is_intact_checkpoint
from vvt_mm.testing import run_dirs


def scalars(work_dir) -> dict[int, dict]:
    (run, ) = run_dirs(work_dir)
    rows = [json.loads(line) for line in (run / 'vis_data' / 'scalars.json').read_text()
            .splitlines()]
    return {row['step']: row for row in rows}


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_a_non_finite_loss_stops_at_that_iteration_before_its_checkpoint(
        tmp_path, make_toy_runner, value):
    runner = make_toy_runner(tmp_path, custom_hooks=[dict(type='NonFiniteLossHook')],
                             poison={4: value})
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    message = str(err.value)
    assert message.startswith(f'iteration 4: non-finite loss loss_mse ({value})')
    assert f'the last good checkpoint is {tmp_path / "iter_2.pth"}' in message
    # Iteration 4 is a checkpoint iteration: its poisoned state was not saved.
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    assert is_intact_checkpoint(str(tmp_path / 'iter_2.pth'))
    assert sorted(scalars(tmp_path)) == [1, 2, 3]

    resumed = make_toy_runner(tmp_path, custom_hooks=[dict(type='NonFiniteLossHook')],
                              resume=True)
    resumed.train()
    assert resumed.iter == 6
    assert all(math.isfinite(p.item()) for p in resumed.model.linear.weight.flatten())


def test_finite_losses_pass_and_the_hook_costs_no_checkpoint(tmp_path, make_toy_runner):
    runner = make_toy_runner(tmp_path, custom_hooks=[dict(type='NonFiniteLossHook')])
    runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth', 'iter_4.pth',
                                                              'iter_6.pth']


def test_dynamic_loss_scaling_counts_skipped_steps_instead_of_stopping(tmp_path,
                                                                       make_toy_runner):
    runner = make_toy_runner(tmp_path, custom_hooks=[dict(type='NonFiniteLossHook')],
                             poison={2: float('inf'), 3: float('nan'), 5: float('inf')},
                             optim_wrapper='amp')
    runner.train()
    assert runner.iter == 6
    logged = scalars(tmp_path)
    assert [logged[i]['skipped_steps'] for i in range(1, 7)] == [0, 1, 2, 2, 3, 3]
    scaler = runner.optim_wrapper.loss_scaler
    assert scaler.get_scale() == 2.**10 / 8  # halved once per skipped step
    assert torch.isfinite(runner.model.linear.weight).all()
    (hook, ) = [h for h in runner.hooks if isinstance(h, NonFiniteLossHook)]
    assert hook.skipped_steps == 3


def test_too_many_consecutive_skips_stop_training(tmp_path, make_toy_runner):
    runner = make_toy_runner(
        tmp_path, custom_hooks=[dict(type='NonFiniteLossHook', max_consecutive_skips=2)],
        poison={3: float('inf'), 4: float('inf')}, optim_wrapper='amp')
    with pytest.raises(NonFiniteLossError, match='iteration 4: the dynamic loss scaler '
                       'skipped 2 optimizer steps in a row'):
        runner.train()


def test_invalid_skip_limit_is_refused():
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        NonFiniteLossHook(max_consecutive_skips=0)
