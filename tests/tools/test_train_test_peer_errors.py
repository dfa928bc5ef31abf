"""tools/train.py and tools/test.py: a lost rank becomes one error line; the watch stops."""
from __future__ import annotations

import os

import pytest

from vvt_mm.runtime import PeerWatch
from vvt_mm.testing import load_tool

train_tool = load_tool('tools/train.py')
test_tool = load_tool('tools/test.py')


class FakeWatch:

    def __init__(self) -> None:
        self.stopped = False

    def explain(self, err: BaseException) -> str | None:
        return f'lost rank 1 ({err})' if 'gloo' in str(err) else None

    def stop(self) -> None:
        self.stopped = True


class FakeHub:

    def get_info(self, key: str):
        return 'work/iter_2.pth' if key == 'last_ckpt' else None


class FakeRunner:

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.message_hub = FakeHub()

    def train(self) -> None:
        if self.error:
            raise self.error

    def test(self) -> dict:
        if self.error:
            raise self.error
        return dict(mIoU=1.0)


@pytest.fixture
def watch(monkeypatch) -> FakeWatch:
    fake = FakeWatch()
    monkeypatch.setattr(PeerWatch, 'start', classmethod(lambda cls, interval_s=1.0: fake))
    return fake


def test_train_names_the_lost_rank_and_the_last_checkpoint(watch, capsys):
    with pytest.raises(SystemExit) as info:
        train_tool.train(FakeRunner(RuntimeError('gloo connection closed')))
    assert info.value.code == 1 and watch.stopped
    err = capsys.readouterr().err
    assert 'error: lost rank 1 (gloo connection closed) The last checkpoint is ' \
           'work/iter_2.pth (continue with --resume).' in err


def test_test_names_the_lost_rank(watch, capsys):
    with pytest.raises(SystemExit):
        test_tool.test(FakeRunner(RuntimeError('gloo connection closed')))
    assert watch.stopped and 'error: lost rank 1' in capsys.readouterr().err


def test_other_errors_propagate_and_success_returns_with_the_watch_stopped(watch):
    with pytest.raises(ValueError, match='bug'):
        train_tool.train(FakeRunner(ValueError('bug')))
    assert watch.stopped
    watch.stopped = False
    assert test_tool.test(FakeRunner(None)) == dict(mIoU=1.0) and watch.stopped


def test_launch_arguments_are_parsed_for_both_tools(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = train_tool.parse_args(['c.py', '--launcher', 'pytorch', '--local-rank', '3'])
    assert (args.launcher, args.local_rank) == ('pytorch', 3)
    assert os.environ['LOCAL_RANK'] == '3'
    assert test_tool.parse_args(['c.py', 'k.pth']).launcher == 'none'
