"""Let glibc's malloc keep freed tensor memory for reuse in CPU runs.

PyTorch's CPU tensors come from ``malloc``. glibc serves requests above its
mmap threshold (128 KiB, adapted up to 32 MiB) with fresh ``mmap`` pages and
returns heap memory above its trim threshold to the kernel on ``free``, so
an iteration's large activations are zero-filled page by page again on every
iteration. In a VM a page fault costs microseconds: VVT-S at 512^2 took ~141k
minor faults per forward and ran ~20% slower than with the memory kept
(forward+backward ~12%; see the README). Serving every request from the heap
(``M_MMAP_MAX = 0``) and trimming only above 1 GiB (``M_TRIM_THRESHOLD``) keeps
the pages mapped; the resident set then stays near its peak instead of
shrinking between iterations, which is what a training or test run reaches
every iteration anyway.

Applied by our launch glue and the benchmark on CPU runs, not on import.
Left alone where the user chose (``MALLOC_*`` variables, ``glibc.malloc``
tunables, a preloaded jemalloc/tcmalloc/mimalloc), where the C library is
not glibc, or with ``VVT_MM_MALLOC_TUNING=0``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ['GLIBC_MMAP_MAX', 'MALLOC_SETTINGS', 'OPT_OUT', 'M_MMAP_MAX', 'M_MMAP_THRESHOLD',
           'M_TRIM_THRESHOLD', 'keep_freed_memory', 'keeping_freed_memory', 'reapply']

# mallopt parameter numbers from glibc's <malloc.h>, and its default M_MMAP_MAX.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
GLIBC_MMAP_MAX = 65536
MALLOC_SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30}
OPT_OUT = 'VVT_MM_MALLOC_TUNING'

_applied = False


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc (musl and others lack it,
    # and their mallopt, if any, takes other numbers).
    return libc if hasattr(libc, 'gnu_get_libc_version') and hasattr(libc, 'mallopt') else None


def _set(libc: ctypes.CDLL) -> bool:
    return all(libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items())


def keeping_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` applied its settings in this process."""
    return _applied


def reapply() -> None:
    """Set :data:`MALLOC_SETTINGS` again after code that changed them for a while
    (the benchmark's CPU memory readings turn mmap back on around a call)."""
    if _applied:
        _set(_glibc())


def _user_chose_malloc_settings() -> bool:
    env = os.environ
    preload = env.get('LD_PRELOAD', '')
    return (any(name.startswith('MALLOC_') for name in env) or
            'glibc.malloc' in env.get('GLIBC_TUNABLES', '') or
            any(other in preload for other in ('jemalloc', 'tcmalloc', 'mimalloc')))


def keep_freed_memory() -> str | None:
    """Apply :data:`MALLOC_SETTINGS` once per process; say what was done, or ``None``.

    Returns ``None`` when it left malloc alone (opted out, ``MALLOC_*`` set by
    the user, not glibc, or applied before).
    """
    global _applied
    if _applied or os.environ.get(OPT_OUT, '1') == '0':
        return None
    if _user_chose_malloc_settings():
        return None
    libc = _glibc()
    if libc is None or not _set(libc):
        return None
    _applied = True
    return ('glibc malloc keeps freed memory for reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD='
            f'1 GiB: no page faults on re-allocated tensors); {OPT_OUT}=0 turns it off')
