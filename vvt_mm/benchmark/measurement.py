"""How one call is measured: its clock, its best time and the peak memory it adds.

Time is the best of a few calls after one warm-up (the minimum is the least
disturbed by other processes on a shared machine); calls slower than 3 s are
not repeated. On CPU with one thread the clock is the calling thread's CPU
time, so time spent waiting for a core held by another process is not
counted. Peak memory is what the measured call adds on top of what already
exists (model, inputs):

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
* CPU: torch has no CPU allocator statistics, so the resident set is used:
  for the measured call glibc's mmap threshold is pinned to 64 KiB
  (``mallopt``) so freed tensors go back to the kernel at once, cached free
  heap pages are released (``malloc_trim``), ``5`` is written to
  ``/proc/self/clear_refs`` (``VmHWM`` := ``VmRSS``), and the peak is
  ``VmHWM`` after minus ``VmRSS`` before. This counts every byte torch,
  oneDNN and MKL touch, at page granularity. Timed calls run with malloc
  keeping memory (the pin would slow them several times). After many large
  models that in-process reading drifts, so :func:`fresh_process_memory`
  measures a case again in a child process pinned from the start.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from vvt_mm.runtime import allocator
from vvt_mm.runtime.allocator import GLIBC_MMAP_MAX, M_MMAP_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD

__all__ = ['MB', 'Clock', 'WALL_CLOCK', 'THREAD_CLOCK', 'pick_clock', 'PeakMemory', 'Meter',
           'Row', 'forward_backward', 'run_case', 'fresh_process_memory']

MB = 1024 * 1024


@dataclass(frozen=True)
class Clock:
    """A named source of seconds; only differences between two readings matter."""

    name: str
    now: Callable[[], float]


WALL_CLOCK = Clock('wall', time.perf_counter)
# Ignores time spent descheduled while other processes hold the cores; only
# meaningful when all the work runs on the calling thread (one torch thread).
THREAD_CLOCK = Clock('thread', time.thread_time)


def pick_clock(choice: str, device: torch.device) -> Clock:
    """``'wall'``, ``'thread'``, or ``'auto'``: thread on CPU with one torch thread."""
    if choice == 'auto':
        one_thread = device.type == 'cpu' and torch.get_num_threads() == 1
        choice = 'thread' if one_thread else 'wall'
    return {'wall': WALL_CLOCK, 'thread': THREAD_CLOCK}[choice]


class PeakMemory:
    """Extra peak memory of one call, in MiB (see the module docstring).

    ``pinned``: glibc's mmap threshold stays pinned for the whole process
    (exact memory, timings slowed 2-4x); otherwise it is pinned only around
    each measured call.
    """

    def __init__(self, device: torch.device, pinned: bool = False) -> None:
        self.device = device
        self.pinned = pinned and device.type == 'cpu'
        if self.pinned:
            libc = ctypes.CDLL('libc.so.6')
            libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)  # mmap back on, if a policy took it
            libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        self.available = device.type == 'cuda' or os.access('/proc/self/clear_refs',
                                                             os.W_OK)

    @staticmethod
    def _status(key: str) -> int:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
        raise ValueError(key)

    def measure(self, fn: Callable[[], object]) -> float:
        if not self.available:
            return float('nan')
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / MB
        return self._measure_cpu(fn)

    def _measure_cpu(self, fn: Callable[[], object]) -> float:
        """Run ``fn`` once with malloc returning every freed block at once.

        The pin makes allocations fault in fresh pages (several times slower),
        so afterwards malloc goes back to keeping memory for the timed calls:
        the run's policy (:mod:`vvt_mm.runtime.allocator`) if it set one,
        otherwise a 32 MiB mmap threshold and a 256 MiB trim threshold
        (glibc's own steady state).
        """
        libc = ctypes.CDLL('libc.so.6')
        if self.pinned:
            # Free heap chunks left from before the pin are still resident:
            # a call served from them would not raise the resident set.
            libc.malloc_trim(0)
            base = self._status('VmRSS')
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            fn()
            return (self._status('VmHWM') - base) / MB
        libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)  # the pin needs mmap
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)  # cached free heap pages would hide reuse
        try:
            base = self._status('VmRSS')
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # VmHWM := VmRSS
            fn()
            return (self._status('VmHWM') - base) / MB
        finally:
            libc.mallopt(M_MMAP_THRESHOLD, 32 * MB)
            libc.mallopt(M_TRIM_THRESHOLD, 256 * MB)
            allocator.reapply()  # the run's own malloc policy, if it set one


@dataclass(frozen=True)
class Meter:
    """Where calls run, the clock that times them and how their memory is read."""

    device: torch.device
    clock: Clock
    memory: PeakMemory

    def timed(self, fn: Callable[[], object]) -> float:
        """Time of one call in ms (synchronised on CUDA)."""
        cuda = self.device.type == 'cuda'
        if cuda:
            torch.cuda.synchronize()
        start = self.clock.now()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return (self.clock.now() - start) * 1e3

    def time_and_memory(self, fn: Callable[[], object], repeats: int, warm: bool = False,
                        budget_ms: float = 3000.0,
                        reset: Callable[[], None] | None = None) -> tuple[float, float]:
        """Best time (ms) over warmed-up calls, and the peak memory (MiB) of one call.

        One warm-up call (skipped when ``warm``: the same kernels already ran),
        then timed calls while the total stays under ``budget_ms`` (at least
        one, at most ``repeats + 1``), then one call measured for memory.
        ``reset`` runs before that call, outside the measurement (e.g. dropping
        the gradients of the timed calls, which the measured call would
        otherwise free and allocate again, hiding them from its peak).
        """
        spent = 0.0 if warm else self.timed(fn)
        best = float('inf')
        for i in range(repeats + 1):
            if i and spent > budget_ms:
                break
            took = self.timed(fn)
            best, spent = min(best, took), spent + took
        if reset is not None:
            reset()
        return best, self.memory.measure(fn)


@dataclass
class Row:
    """One measured case: a line of the tables and of ``results.csv``.

    ``fwd_setup_s`` / ``fwd_bwd_setup_s``: one-off wall seconds before steady
    calls (deploy suite: ONNX export plus session creation, or compile time
    as first call minus a steady call).
    """

    suite: str
    name: str
    size: int  # image side (attention: side / 4 tokens per side); core: token side
    tokens: int
    batch: int
    fwd_ms: float = float('nan')
    fwd_bwd_ms: float = float('nan')
    fwd_mem_mb: float = float('nan')
    train_mem_mb: float = float('nan')
    fwd_setup_s: float = float('nan')
    fwd_bwd_setup_s: float = float('nan')
    note: str = ''
    extra: dict = field(default_factory=dict)


def forward_backward(forward: Callable[[], torch.Tensor | tuple]) -> None:
    """One training step's compute: ``forward`` then backward of the outputs' means."""
    out = forward()
    outs = out if isinstance(out, (tuple, list)) else (out, )
    sum(o.float().mean() for o in outs).backward()


def run_case(row: Row, forward: Callable[[], torch.Tensor | tuple], params: list,
             inputs: list[torch.Tensor], meter: Meter, repeats: int, train: bool = True,
             memory_only: bool = False) -> Row:
    """Times ``forward`` (no grad) and forward+backward, and their peak memory.

    ``memory_only``: one warm-up call then the memory call, no timing (what a
    :func:`fresh_process_memory` child does).
    """

    def clear_grads() -> None:
        for t in [*params, *inputs]:
            t.grad = None

    def fwd() -> None:
        with torch.no_grad():
            forward()

    def fwd_bwd() -> None:
        clear_grads()
        forward_backward(forward)

    # The training call's peak counts its gradients: each measured call starts
    # without them (the warm-up's are dropped before the measurement starts).
    if memory_only:
        for name, fn in (('fwd_mem_mb', fwd), ('train_mem_mb', fwd_bwd)):
            fn()
            clear_grads()
            setattr(row, name, meter.memory.measure(fn))
        clear_grads()
        return row
    try:
        row.fwd_ms, row.fwd_mem_mb = meter.time_and_memory(fwd, repeats)
        if train:
            # A slow forward has warmed up every kernel the backward needs too.
            row.fwd_bwd_ms, row.train_mem_mb = meter.time_and_memory(
                fwd_bwd, repeats, warm=row.fwd_ms > 3000, reset=clear_grads)
            clear_grads()
    except (RuntimeError, MemoryError) as err:  # e.g. CUDA OOM: record and go on
        row.note = f'failed: {str(err).splitlines()[0][:80]}'
        if meter.device.type == 'cuda':
            torch.cuda.empty_cache()
    return row


def fresh_process_memory(cli_args: Sequence[str], timeout_s: float = 3600) -> list[dict]:
    """Peak memory of cases measured by a child benchmark with malloc pinned throughout.

    In a long-running process the resident set after many large models drifts
    (cached heap, fragmentation): inference peaks of whole backbones read up
    to 2x high. A fresh process pinned from the start gives the exact figure;
    its slow timings are not used. ``cli_args`` select the cases; returns one
    ``dict(name, size, fwd_mem_mb, train_mem_mb)`` per case. Raises
    ``subprocess.SubprocessError`` or ``ValueError`` when the child fails.
    """
    cmd = [sys.executable, '-m', 'vvt_mm.benchmark.cli', '--memory-only',
           '--memory-method', 'pinned', *cli_args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=timeout_s)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise ValueError('the child printed nothing')
    return json.loads(lines[-1])
