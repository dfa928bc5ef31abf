"""Mixed-precision training without CUDA: bf16 autocast on the CPU.

mmengine's ``AmpOptimWrapper`` (what ``--amp`` selects) refuses to run
without a GPU/NPU/MLU/MUSA device. On a CPU, bf16 autocast is the mixed
precision torch offers; bf16 keeps fp32's exponent range, so no loss scaling
is needed and the optimizer steps exactly as in fp32. ``tools/train.py --amp``
picks this wrapper when CUDA is absent; a config can name it directly::

    optim_wrapper = dict(type='CPUAutocastOptimWrapper', optimizer=...)
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

__all__ = ['CPUAutocastOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under ``torch.autocast('cpu')``.

    Args:
        dtype: ``'bfloat16'`` (default) or ``'float16'``.
        **kwargs: as for ``OptimWrapper`` (``optimizer``, ``clip_grad``,
            ``accumulative_counts``).
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs) -> None:
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f'CPUAutocastOptimWrapper: dtype={dtype!r}; use '
                             "'bfloat16' (recommended on CPU) or 'float16'")
        if 'loss_scale' in kwargs:
            raise ValueError('CPUAutocastOptimWrapper takes no loss_scale: bf16 autocast '
                             'needs no loss scaling (remove loss_scale from optim_wrapper)')
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), \
                torch.autocast(device_type='cpu', dtype=self.cast_dtype):
            yield
