"""Reading and comparing training runs for tests: logged losses, state dicts, free ports."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import torch

__all__ = ['free_port', 'logged_scalars', 'max_tensor_diff', 'run_dirs']


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_dirs(work_dir: Path) -> set[Path]:
    """The per-run folders mmengine writes into a work dir (``<timestamp>/``)."""
    return {p for p in Path(work_dir).glob('2*') if (p / 'vis_data').is_dir()}


def logged_scalars(run_dir: Path) -> dict[int, dict]:
    """``{iteration: {'loss': ..., 'lr': ..., ...}}`` from mmengine's ``vis_data/scalars.json``."""
    (path, ) = Path(run_dir).glob('vis_data/scalars.json')
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row['step']: row for row in rows if 'loss' in row}


def max_tensor_diff(a, b) -> float:
    """Largest abs difference between two nested structures of tensors/numbers."""
    if isinstance(a, torch.Tensor):
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max([max_tensor_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        return max([max_tensor_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return abs(a - b)
    assert a == b, (a, b)
    return 0.0
