"""Name the rank that died when a collective of the survivors fails.

When one process of a job dies (SIGKILL, the OOM killer, a segfault, its node
going down) the others fail in their next collective with the backend's view
of it -- gloo's ``Connection closed by peer [10.0.0.2]:40321``, NCCL's
``remote process exited`` -- which names an address, not a rank; and on every
node but the dead rank's, torchrun's summary names the local survivor as the
root cause.

:class:`PeerWatch` fixes the message. Every rank records ``host pid`` in the
job's rendezvous store (``MASTER_ADDR:MASTER_PORT``, served by torchrun's
agent or by rank 0) and a daemon thread bumps a per-rank counter there every
second. After a collective fails, :meth:`PeerWatch.explain` watches the
counters for a few seconds: the ranks whose counter stopped are the dead ones.
The cost while training is one small store request per second per rank.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import torch.distributed as dist

__all__ = ['PeerWatch', 'is_lost_peer_error']

_PREFIX = 'vvt_mm/peers'
# What gloo, NCCL and the TCP store say when the other end of a connection is gone.
_LOST_PEER = re.compile(
    r'Connection closed by peer|Connection reset by peer|Broken pipe|remote process exited|'
    r'NCCL communicator was aborted|ncclRemoteError|Connection refused|'
    r'failed to recv|failed to send', re.IGNORECASE)


def is_lost_peer_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it chains) says a peer connection was lost."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, getattr(dist, 'DistNetworkError', ())) or \
                _LOST_PEER.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_sentence(exc: BaseException) -> str:
    """``Connection closed by peer [10.0.0.2]:40321`` out of the backend's long message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r'^\[[^\]]*:\d+\]\s*', '', text)  # the C++ source location
    return text.split('. ', 1)[0].rstrip('.')


def _store(timeout_s: float) -> dist.TCPStore:
    return dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']),
                         is_master=False, timeout=timedelta(seconds=timeout_s),
                         wait_for_workers=False)


class PeerWatch:
    """Heartbeats of every rank in the rendezvous store (see the module docstring).

    Args:
        rank: this process's global rank.
        world_size: number of ranks.
        interval_s: seconds between heartbeats.
    """

    #: how long a diagnosis waits for the store before calling it gone
    store_timeout_s = 5.0

    def __init__(self, rank: int, world_size: int, interval_s: float = 1.0) -> None:
        self.rank = rank
        self.world_size = world_size
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._store = _store(timeout_s=30)
        self._store.set(f'{_PREFIX}/who/{rank}', f'{socket.gethostname()} pid {os.getpid()}')
        self._thread = threading.Thread(target=self._beat, name='vvt_mm-heartbeat', daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, interval_s: float = 1.0) -> PeerWatch | None:
        """A watch for this process if it is one rank of several, else ``None``."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        if 'MASTER_ADDR' not in os.environ or 'MASTER_PORT' not in os.environ:
            return None
        try:
            return cls(dist.get_rank(), dist.get_world_size(), interval_s)
        except Exception:  # diagnostics only: never stop a job for it
            return None

    @classmethod
    @contextlib.contextmanager
    def watching(cls, interval_s: float = 1.0) -> Iterator[PeerWatch | None]:
        """:meth:`start` for the ``with`` block, stopped when it ends (even by an error)."""
        peers = cls.start(interval_s)
        try:
            yield peers
        finally:
            if peers is not None:
                peers.stop()

    def _beat(self) -> None:
        key = f'{_PREFIX}/beat/{self.rank}'
        while not self._stop.is_set():
            try:
                self._store.add(key, 1)
            except Exception:
                return  # the store is gone: explain() reports that
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """End the heartbeats and wait for the thread, so none is left at exit.

        A daemon thread still inside a store request while the interpreter
        shuts down can take the process down with it after a finished run.
        """
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.store_timeout_s)

    def dead_ranks(self, wait_s: float | None = None) -> list[int] | None:
        """Ranks whose heartbeat stops during ``wait_s``; ``None`` if the store is gone."""
        wait_s = 2.5 * self.interval_s if wait_s is None else wait_s
        try:
            store = _store(self.store_timeout_s)
            keys = [f'{_PREFIX}/beat/{r}' for r in range(self.world_size)]
            before = [store.add(k, 0) for k in keys]
            time.sleep(wait_s)
            after = [store.add(k, 0) for k in keys]
        except Exception:
            return None
        return [r for r in range(self.world_size)
                if r != self.rank and after[r] == before[r]]

    def describe(self, rank: int) -> str:
        try:
            who = _store(self.store_timeout_s).get(f'{_PREFIX}/who/{rank}').decode()
        except Exception:
            return f'rank {rank}'
        return f'rank {rank} ({who})'

    def explain(self, exc: BaseException) -> str | None:
        """A message naming the dead rank(s) if ``exc`` is a lost-peer error, else ``None``."""
        if not is_lost_peer_error(exc):
            return None
        first = _first_sentence(exc)
        dead = self.dead_ranks()
        me = f'rank {self.rank}'
        if dead is None:
            return (f'{me}: a collective failed and the rendezvous store at '
                    f'{os.environ["MASTER_ADDR"]}:{os.environ["MASTER_PORT"]} is unreachable: '
                    'the process serving it (torchrun on node 0, or rank 0 under Slurm) or its '
                    f'node is gone. Backend error: {first}.')
        if not dead:
            return None  # every rank is alive: not a dead peer, keep the original error
        names = ', '.join(self.describe(r) for r in dead)
        return (f'{me}: lost {names}: that process stopped (killed, out of memory or '
                f'crashed: its own log or the launcher summary says why), so {me} cannot '
                f'continue. Backend error: {first}.')
