"""Fault injection imported by the training subprocesses of the fault tests.

``PauseAfterIterHook`` parks ranks at a known point, so a test can kill or
signal a run between two checkpoints instead of racing a sub-second loop;
``PoisonedCrossEntropyLoss`` turns one iteration's loss into NaN.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.registry import HOOKS
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS


@HOOKS.register_module()
class PauseAfterIterHook(Hook):
    """After iteration ``after_iter`` (1-based) write ``marker_dir/rank<R>`` (the pid), then
    park the ranks in ``ranks``: until SaveOnSignalHook has seen a signal, or until killed.

    Runs before SaveOnSignalHook (LOWEST), so a signal that arrives while parked is
    acted on at the end of this same iteration.
    """

    priority = 'VERY_LOW'

    def __init__(self, after_iter: int, marker_dir: str, ranks: tuple = (), until: str = 'killed',
                 wait_s: float = 600) -> None:
        assert until in ('killed', 'signal')
        self.after_iter, self.marker_dir, self.ranks = after_iter, marker_dir, tuple(ranks)
        self.until, self.wait_s = until, wait_s

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 != self.after_iter:
            return
        Path(self.marker_dir, f'rank{get_rank()}').write_text(str(os.getpid()))
        if get_rank() not in self.ranks:
            return
        signal_hook = next((h for h in runner.hooks if type(h).__name__ == 'SaveOnSignalHook'),
                           None)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            if self.until == 'signal' and signal_hook is not None and signal_hook.received:
                return
            time.sleep(0.05)


@MODELS.register_module()
class PoisonedCrossEntropyLoss(CrossEntropyLoss):
    """mmseg's CrossEntropyLoss, NaN at training iteration ``poison_iter`` (1-based) on
    the ranks in ``ranks`` (all when None)."""

    def __init__(self, poison_iter: int, ranks: tuple | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.poison_iter = poison_iter
        self.ranks = None if ranks is None else tuple(ranks)

    def forward(self, *args, **kwargs):
        loss = super().forward(*args, **kwargs)
        iteration = MessageHub.get_current_instance().get_info('iter') + 1
        if self.training and iteration == self.poison_iter and \
                (self.ranks is None or get_rank() in self.ranks):
            loss = loss * float('nan')
        return loss
