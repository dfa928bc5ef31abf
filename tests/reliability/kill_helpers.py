"""Helpers imported by the training subprocesses of the kill-and-resume test.

``PauseForKillHook`` parks a training run right after a given iteration and
leaves a marker file, so the test can SIGKILL it at a known point between two
checkpoints instead of racing a sub-second training loop.
"""
from __future__ import annotations

import time
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class PauseForKillHook(Hook):
    """After iteration ``after_iter`` (1-based), write ``marker`` and wait to be killed."""

    def __init__(self, after_iter: int, marker: str, wait_s: float = 600) -> None:
        self.after_iter = after_iter
        self.marker = marker
        self.wait_s = wait_s

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.after_iter:
            Path(self.marker).write_text(str(runner.iter + 1))
            time.sleep(self.wait_s)
