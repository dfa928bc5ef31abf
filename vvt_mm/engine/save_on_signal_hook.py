"""Checkpoint and stop cleanly when the scheduler sends SIGTERM.

Cluster schedulers end a job at its time limit (or on pre-emption) with
SIGTERM, then SIGKILL a grace period later (Slurm's ``KillWait``, torchrun's
``--shutdown-timeout``, both 30 s by default). Without a handler every rank
dies at once and the work since the last periodic checkpoint is lost (16k
iterations with mmseg's 160k schedule).

With ``custom_hooks = [dict(type='SaveOnSignalHook')]`` the signal only sets a
flag. At the end of the current training iteration the ranks agree on it with
one tiny all-reduce, so they stop at the same iteration even when the signal
reached them at different moments; rank 0 writes ``iter_N.pth`` (unless the
periodic checkpoint of that iteration was just written) and points
``last_checkpoint`` at it, and every rank exits with status ``128 + signal``
and no traceback. ``--resume`` continues at iteration N + 1 exactly as if the
run had not stopped.

A signal during validation takes effect after it (at a validation iteration
the periodic checkpoint has usually just been written). An epoch-based loop
cannot resume mid-epoch in mmengine: the checkpoint then restarts the
interrupted epoch from its first batch (logged as a warning).
"""
from __future__ import annotations

import logging
import os.path as osp
import signal
import threading
from collections.abc import Sequence

import torch
import torch.distributed as dist
from mmengine.dist import is_main_process
from mmengine.fileio import join_path
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

__all__ = ['SaveOnSignalHook', 'TrainingInterrupted']


class TrainingInterrupted(SystemExit):
    """Raised on every rank after the checkpoint is written; exits with ``128 + signum``."""


def _signal_number(name: str | int) -> signal.Signals:
    try:
        return signal.Signals(name) if isinstance(name, int) else signal.Signals[
            name if name.startswith('SIG') else f'SIG{name}']
    except (KeyError, ValueError):
        raise ValueError(f'unknown signal {name!r}; use names such as SIGTERM or SIGUSR1'
                         ) from None


@HOOKS.register_module()
class SaveOnSignalHook(Hook):
    """On ``signals``, checkpoint at the end of the iteration and exit.

    Args:
        signals: signals to handle (names or numbers); SIGTERM by default. Add
            e.g. ``'SIGUSR1'`` for Slurm's ``--signal=USR1@120`` (and pass it
            through torchrun with ``--signals-to-handle``).
        save: write a checkpoint before exiting (otherwise only stop cleanly).
    """

    # After CheckpointHook (VERY_LOW): a periodic checkpoint of this iteration
    # is then already written and is not written twice.
    priority = 'LOWEST'

    def __init__(self, signals: Sequence[str | int] = ('SIGTERM', ), save: bool = True) -> None:
        self.signals = [_signal_number(s) for s in signals]
        self.save = save
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame) -> None:
        # Only record: the iteration in progress finishes, then after_train_iter acts.
        # A repeated signal (the launcher forwards what the scheduler already
        # sent to the whole process group) changes nothing.
        if self.received is None:
            self.received = signal.Signals(signum)

    def before_train(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log('SaveOnSignalHook: training runs outside the main thread, where '
                      'signal handlers cannot be installed; signals stop it as usual',
                      logger='current', level=logging.WARNING)
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def after_train(self, runner) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._agreed_signal() is not None:
            self._stop(runner, completed_iters=runner.iter + 1)

    def _agreed_signal(self) -> signal.Signals | None:
        """The signal any rank received, decided together by all ranks."""
        local = int(self.received or 0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'
            flag = torch.tensor([local], dtype=torch.int64, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = int(flag.item())
        if not local:
            return None
        if self.received is None:  # another rank got it first
            self.received = signal.Signals(local)
        return signal.Signals(local)

    def _stop(self, runner, completed_iters: int) -> None:
        name = self.received.name
        note = ''
        if self.save:
            path = self._save(runner, completed_iters)
            note = f'; checkpoint {path} (continue with --resume)'
            if isinstance(runner.train_loop, EpochBasedTrainLoop):
                print_log('epoch-based training resumes at the start of the interrupted '
                          f'epoch {runner.epoch + 1}: its first iterations run again',
                          logger='current', level=logging.WARNING)
        print_log(f'{name} received: stopping after iteration {completed_iters}{note}',
                  logger='current', level=logging.WARNING)
        # after_run ends the run the way a finished one ends (visualizer
        # closed, logs flushed); the remaining iterations are skipped.
        runner.call_hook('after_run')
        raise TrainingInterrupted(128 + int(self.received))

    def _save(self, runner, completed_iters: int) -> str:
        hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(hook, 'out_dir', None) or runner.work_dir
        backend_args = getattr(hook, 'backend_args', None)
        filename = f'iter_{completed_iters}.pth'
        path = join_path(out_dir, filename, backend_args=backend_args)
        if runner.message_hub.get_info('last_ckpt') == path:
            return path  # the periodic checkpoint of this iteration
        runner.save_checkpoint(out_dir, filename, save_optimizer=True,
                               save_param_scheduler=True, backend_args=backend_args,
                               meta=dict(epoch=runner.epoch, iter=completed_iters),
                               by_epoch=False)
        runner.message_hub.update_info('last_ckpt', path)
        if is_main_process():
            with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(path)
        return path
