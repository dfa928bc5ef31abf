"""The official Feature Preserving Connection between its two ``abs_clamp`` points, fused.

The official attention output is ``abs_clamp(y + y * gate)`` with
``y = abs_clamp(out)``: as separate ops that is 16 passes over the
``(B, N, C)`` tokens forward (each ``abs_clamp`` is 7). With ``c =
clamp(|out|)`` and ``gate >= 0`` (it is a sigmoid), ``y + y * gate =
sign(out) * (c + c * gate)`` exactly -- multiplying by ``sign`` is exact in
floating point, so the rounded sum is the same number -- and the result is
``sign(out) * clamp(c + c * gate)``: 10 passes with autograd's masks (7
without gradients), the same value bit for bit,
and a backward that computes autograd's gradients of the official expression
in autograd's order (so those match bit for bit too).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .vicinity_reference import ABS_CLAMP_MAX, ABS_CLAMP_MIN

__all__ = ['clamped_feature_preserving']


class _ClampedFeaturePreserving(torch.autograd.Function):

    @staticmethod
    def forward(ctx, out: Tensor, gate: Tensor) -> Tensor:
        lo, hi = ABS_CLAMP_MIN, ABS_CLAMP_MAX
        mag = out.abs()
        inner = mag.clamp(lo, hi)
        # 0/1 bytes, not bools: a float times a uint8 tensor is several times
        # faster on CPU than times a bool one.
        keep_inner = torch.empty_like(mag, dtype=torch.uint8)
        torch.eq(inner, mag, out=keep_inner)
        sign = out.sign()
        total = torch.mul(inner, gate).add_(inner)  # c * gate + c = |y + y * gate|
        kept = inner.mul_(sign)  # y = abs_clamp(out), saved for the gate's gradient
        outer = total.clamp(lo, hi)
        keep_outer = torch.empty_like(keep_inner)
        torch.eq(outer, total, out=keep_outer)
        ctx.save_for_backward(kept, gate, keep_inner, keep_outer)
        return outer.mul_(sign)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        kept, gate, keep_inner, keep_outer = ctx.saved_tensors
        grad_sum = grad * keep_outer
        # y + y * gate: y's gradient from both terms, the gate's summed over
        # the dimensions it was broadcast along (as autograd does).
        grad_gate = (grad_sum * kept).sum_to_size(gate.shape)
        grad_kept = grad_sum * gate
        grad_kept += grad_sum
        return grad_kept.mul_(keep_inner), grad_gate


def clamped_feature_preserving(out: Tensor, gate: Tensor) -> Tensor:
    """``abs_clamp(y + y * gate)`` with ``y = abs_clamp(out)``, for ``gate >= 0``.

    ``gate`` broadcasts against ``out`` (the FPC's ``(B, 1, C)`` sigmoid gate)
    and has its dtype (with mixed dtypes autograd rounds the official
    expression's gradient in between, which this does not reproduce).
    Eager only: compilers fuse the plain expression themselves and exporters
    need it in plain ops, so callers use it outside them.
    """
    if out.dtype != gate.dtype:
        raise TypeError(f'out and gate must share a dtype, got {out.dtype} and {gate.dtype}')
    if torch.is_grad_enabled() and (out.requires_grad or gate.requires_grad):
        return _ClampedFeaturePreserving.apply(out, gate)
    # No gradient: no masks to keep, 7 passes.
    inner = out.abs().clamp_(ABS_CLAMP_MIN, ABS_CLAMP_MAX)
    total = torch.mul(inner, gate).add_(inner)
    return total.clamp_(ABS_CLAMP_MIN, ABS_CLAMP_MAX).mul_(out.sign())
