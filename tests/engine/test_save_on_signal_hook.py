"""SaveOnSignalHook: a signal checkpoints at the end of the iteration, then the run exits
with 128 + signum; --resume continues as if it had not stopped (one process, in-process;
tests/reliability/test_training_faults.py sends SIGTERM to a 2-process launcher)."""
from __future__ import annotations

import os
import signal

import pytest
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from vvt_mm.engine import SaveOnSignalHook, TrainingInterrupted
from vvt_mm.testing import logged_scalars, max_tensor_diff, run_dirs


@HOOKS.register_module()
class SignalSelfAfterIterHook(Hook):
    """Send ``signum`` to this process during iteration ``at`` (1-based)."""

    priority = 'HIGH'

    def __init__(self, at: int, signum: int = signal.SIGTERM) -> None:
        self.at, self.signum = at, signum

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), self.signum)


def hooks(at: int, **options) -> list[dict]:
    return [dict(type='SignalSelfAfterIterHook', at=at), dict(type='SaveOnSignalHook', **options)]


def test_sigterm_saves_the_iteration_and_resume_matches_an_uninterrupted_run(
        tmp_path, make_toy_runner):
    reference = make_toy_runner(tmp_path / 'ref')
    reference.train()
    work = tmp_path / 'stopped'
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stop:
        make_toy_runner(work, custom_hooks=hooks(at=3)).train()
    assert stop.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth', 'iter_3.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_3.pth')
    assert signal.getsignal(signal.SIGTERM) is not previous  # set by the run ...
    signal.signal(signal.SIGTERM, previous)  # (... which exits the process in real use)

    resumed = make_toy_runner(tmp_path / 'resumed', resume=True,
                              load_from=str(work / 'iter_3.pth'))
    resumed.train()
    (run, ) = run_dirs(tmp_path / 'resumed')
    ref_losses = logged_scalars(next(iter(run_dirs(tmp_path / 'ref'))))
    losses = logged_scalars(run)
    assert sorted(losses) == [4, 5, 6]
    assert max(abs(losses[i]['loss'] - ref_losses[i]['loss']) for i in losses) == 0
    assert max_tensor_diff(resumed.model.state_dict(), reference.model.state_dict()) == 0


def test_a_signal_at_a_checkpoint_iteration_writes_no_second_copy(tmp_path, make_toy_runner):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(TrainingInterrupted):
            make_toy_runner(tmp_path, custom_hooks=hooks(at=4)).train()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth', 'iter_4.pth']


def test_save_false_only_stops(tmp_path, make_toy_runner):
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            make_toy_runner(tmp_path, custom_hooks=[
                dict(type='SignalSelfAfterIterHook', at=3, signum=int(signal.SIGUSR1)),
                dict(type='SaveOnSignalHook', signals=['USR1'], save=False)]).train()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert stop.value.code == 128 + signal.SIGUSR1
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']


def test_handlers_are_restored_after_training(tmp_path, make_toy_runner):
    previous = signal.getsignal(signal.SIGTERM)
    make_toy_runner(tmp_path, custom_hooks=[dict(type='SaveOnSignalHook')]).train()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_unknown_signal_names_are_refused():
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        SaveOnSignalHook(signals=['SIGNOPE'])
