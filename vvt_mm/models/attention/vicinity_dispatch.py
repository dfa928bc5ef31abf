"""Which implementation of the vicinity core runs: a small policy apart from the math.

The math lives in :mod:`vvt_mm.ops` (official formulation, separable form,
fused Triton forward); all compute the same function up to float rounding.
``impl='auto'`` picks, in order:

* the official formulation while exporting (``torch.export``, ONNX): plain aten
  ops that exporters understand, with angles from the traced ``H, W``;
* the fused Triton kernels on CUDA when Triton imports (and no kernel has
  failed in this process: a failure warns once, then the separable form runs);
* on CPU, the official formulation for small maps (see
  :data:`SMALL_MAP_TOKENS`), whose few large GEMMs beat many tiny per-row ones;
* the separable form otherwise.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from vvt_mm.ops.vicinity_reference import official_constants, vicinity_attention_reference
from vvt_mm.ops.vicinity_separable import vicinity_attention_separable

from ..layers.tracing import is_exporting

__all__ = ['IMPLS', 'SMALL_MAP_TOKENS', 'SMALL_MAP_TOKENS_NO_GRAD', 'choose_vicinity_impl',
           'triton_available', 'vicinity_attention']

IMPLS = ('auto', 'torch', 'reference', 'triton')

# Maps this small run faster through the official formulation on CPU: the
# separable form's per-row/per-column GEMMs get tiny (7x7 maps: 7 x 32 x 33)
# and per-call overhead dominates (measured: forward+backward 0.77x at 7x7 and
# ~1x at 16x16 for the separable form; forward alone ~0.9x up to 24x24).
SMALL_MAP_TOKENS = 256
SMALL_MAP_TOKENS_NO_GRAD = 576


def triton_available(t: Tensor) -> bool:
    """Whether the fused Triton kernels can run on ``t``'s device.

    False on CPU, without Triton, and after a kernel failed in this process
    (:func:`~vvt_mm.ops.vicinity_triton.kernels_disabled`: it warned once and
    the separable path runs from then on).
    """
    if not t.is_cuda:
        return False
    try:
        from vvt_mm.ops import vicinity_triton
    except ImportError:
        return False
    return vicinity_triton.kernels_disabled() is None


def choose_vicinity_impl(q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                         kv_hw: tuple[int, int] | None) -> str:
    """The implementation ``impl='auto'`` runs for these inputs."""
    if is_exporting():
        return 'reference'
    if triton_available(q):
        return 'triton'
    if q.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled(
            q.device.type):
        return 'torch'  # computes in fp32: the reference would run its GEMMs in fp16
    if torch.compiler.is_compiling():
        return 'torch'  # one opaque op: no map-size branch to guard on
    tokens = max(math.prod(q_hw), math.prod(kv_hw or q_hw))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    limit = SMALL_MAP_TOKENS if grad else SMALL_MAP_TOKENS_NO_GRAD
    return 'reference' if tokens <= limit else 'torch'


def vicinity_attention(q: Tensor, k: Tensor, v: Tensor,
                       q_hw: tuple[int, int],
                       kv_hw: tuple[int, int] | None = None,
                       clamp: bool = True,
                       eps: float | None = None,
                       impl: str = 'auto') -> Tensor:
    """Vicinity attention of ``(B, heads, N, d)`` q, k, v on their token grids.

    ``eps``: added to the normaliser, ``None`` for the official
    :data:`~vvt_mm.ops.vicinity_reference.NORMALISER_EPS` (a compile-time
    constant under ``torch.compile``).
    ``impl``: ``'auto'`` (see the module docstring), ``'torch'`` (separable),
    ``'reference'`` (official formulation) or ``'triton'``.
    """
    if eps is None:
        eps = official_constants()[2]
    if impl == 'auto':
        impl = choose_vicinity_impl(q, k, v, q_hw, kv_hw)
    if impl == 'torch':
        return vicinity_attention_separable(q, k, v, q_hw, kv_hw, clamp, eps)
    if impl == 'reference':
        return vicinity_attention_reference(q, k, v, q_hw, kv_hw, clamp, eps)
    if impl == 'triton':
        from vvt_mm.ops.vicinity_triton import vicinity_attention_triton
        return vicinity_attention_triton(q, k, v, q_hw, kv_hw, clamp, eps)
    raise ValueError(f'unknown vicinity attention impl {impl!r}; choose one of {IMPLS}')
