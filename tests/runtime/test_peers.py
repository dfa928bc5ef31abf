"""PeerWatch names the rank whose heartbeat stopped when a collective fails (one process
plays both ranks against a real TCPStore; the 2-process case is in
tests/reliability/test_training_faults.py)."""
from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta

import pytest
import torch.distributed as dist

from vvt_mm.runtime import PeerWatch, is_lost_peer_error
from vvt_mm.testing import free_port

GLOO_LOST = RuntimeError('[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection '
                         'closed by peer [127.0.0.1]:41234. This is typically caused by a '
                         'remote worker crashing.')


@pytest.fixture
def store(monkeypatch):
    port = free_port()
    server = dist.TCPStore('127.0.0.1', port, is_master=True, wait_for_workers=False,
                           timeout=timedelta(seconds=10))
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(port))
    yield server
    del server


def test_lost_peer_errors_are_recognised_through_the_chain():
    assert is_lost_peer_error(GLOO_LOST)
    assert is_lost_peer_error(RuntimeError('NCCL error: remote process exited or there was a '
                                           'network error'))
    wrapped = ValueError('outer')
    wrapped.__cause__ = GLOO_LOST
    assert is_lost_peer_error(wrapped)
    assert not is_lost_peer_error(ValueError('shapes do not match'))


def test_the_rank_whose_heartbeat_stopped_is_named(store):
    me = PeerWatch(rank=0, world_size=3, interval_s=0.1)
    alive = PeerWatch(rank=1, world_size=3, interval_s=0.1)
    dead = PeerWatch(rank=2, world_size=3, interval_s=0.1)
    dead.stop()
    try:
        assert me.dead_ranks(wait_s=0.5) == [2]
        message = me.explain(GLOO_LOST)
        assert message.startswith(f'rank 0: lost rank 2 ({socket.gethostname()} pid '
                                  f'{os.getpid()}): ')
        assert message.endswith('Backend error: Connection closed by peer [127.0.0.1]:41234.')
        assert me.explain(ValueError('not a network error')) is None
    finally:
        for watch in (me, alive):
            watch.stop()


def test_no_message_when_every_rank_is_alive(store):
    me, other = (PeerWatch(rank=r, world_size=2, interval_s=0.1) for r in (0, 1))
    try:
        assert me.explain(GLOO_LOST) is None  # keep the original error
    finally:
        me.stop()
        other.stop()


def test_a_gone_store_is_reported(monkeypatch, store):
    me = PeerWatch(rank=1, world_size=2, interval_s=0.1)
    me.stop()
    me.store_timeout_s = 0.5
    monkeypatch.setenv('MASTER_PORT', str(free_port()))  # nothing listens there
    assert 'the rendezvous store at 127.0.0.1:' in me.explain(GLOO_LOST)


def test_no_watch_without_a_process_group():
    assert PeerWatch.start() is None


def test_stopping_a_watch_ends_its_heartbeat_thread(store):
    before = set(threading.enumerate())
    watch = PeerWatch(rank=0, world_size=2, interval_s=0.1)
    started = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in started] == ['vvt_mm-heartbeat']
    watch.stop()
    assert not started[0].is_alive()
