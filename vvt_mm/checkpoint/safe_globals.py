"""The globals an mmengine checkpoint needs under ``torch.load(weights_only=True)``.

mmengine (0.10) saves, besides tensors, its message hub: ``HistoryBuffer``
objects holding numpy arrays and numpy scalars. torch >= 2.6 refuses those
unless allowlisted. We allowlist exactly the globals a real checkpoint holds
(:data:`MMENGINE_CHECKPOINT_GLOBALS`, kept in sync with one saved by a Runner
in tests/reliability/test_safe_resume.py) plus numpy's plain numeric dtype
classes (BUILD targets of those arrays), so a model trained with mmseg, mmdet
or mmpretrain loads as pretrained weights or resumes without
``weights_only=False``. The one risky name, ``builtins.getattr``
(``HistoryBuffer`` pickles its statistics methods as
``getattr(HistoryBuffer, 'mean')``), is answered by a stand-in that resolves
only those methods: torch already refuses to *call* anything not allowlisted,
and the stand-in keeps a crafted file from even fetching other attributes
(e.g. ``ndarray.tofile``).

:func:`register_mmengine_safe_globals` (run by ``import vvt_mm``) adds the same
list to torch's process-wide allowlist (``torch.serialization.add_safe_globals``),
so code that calls ``torch.load`` without ``weights_only`` -- mmengine's
``load_checkpoint``, hence mmseg's ``init_model`` and every stock
``tools/test.py`` -- reads our training checkpoints too, still weights-only.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_globals', 'mmengine_safe_globals',
    'register_mmengine_safe_globals'
]

# Names ``torch.serialization.get_unsafe_globals_in_checkpoint`` reports for a
# checkpoint saved by mmengine 0.10's Runner (numpy 2.x); kept in sync by
# tests/reliability/test_safe_resume.py.
MMENGINE_CHECKPOINT_GLOBALS = (
    'mmengine.logging.history_buffer.HistoryBuffer',
    'numpy.ndarray',
    'numpy.dtype',
    'numpy._core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar',
    'builtins.getattr',
)


# HistoryBuffer's built-in statistics; registered custom ones are allowed too.
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')

# numpy scalars and arrays are rebuilt by BUILD on their dtype, so torch asks for
# the dtype's class as well; plain numeric dtypes are inert descriptions of bytes.
_NUMERIC_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                   'uint64', 'float16', 'float32', 'float64')


def _history_buffer_getattr(obj: object, name: str) -> Callable:
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods."""
    allowed = set(_DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); under weights_only only '
        "HistoryBuffer's statistics methods are allowed")


def mmengine_safe_globals() -> list:
    """The allowlist for ``torch.serialization.safe_globals``.

    numpy 1.x wrote ``numpy.core.multiarray``; numpy 2 moved it to
    ``numpy._core`` (the old name still imports), so both spellings map to
    the same functions and old checkpoints resume too.
    """
    multiarray = np._core.multiarray  # numpy >= 2
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        (_history_buffer_getattr, 'builtins.getattr'),
        *(type(np.dtype(name)) for name in _NUMERIC_DTYPES),
    ]


def register_mmengine_safe_globals() -> None:
    """Allow :func:`mmengine_safe_globals` in every ``torch.load(weights_only=True)``.

    Idempotent (torch keeps the allowlist as a set). The allowlist is what
    ``weights_only`` was designed to be extended with: nothing outside it is
    unpickled, and ``builtins.getattr`` is the restricted stand-in.
    """
    torch.serialization.add_safe_globals(mmengine_safe_globals())


@contextmanager
def allow_mmengine_globals() -> Iterator[None]:
    """``torch.serialization.safe_globals(mmengine_safe_globals())`` that keeps the
    process-wide registration.

    torch's context manager *removes* its globals on exit, including ones that
    were registered before it was entered; so only the missing ones go in.
    """
    present = set(torch.serialization.get_safe_globals())
    missing = [item for item in mmengine_safe_globals() if item not in present]
    with torch.serialization.safe_globals(missing):
        yield
