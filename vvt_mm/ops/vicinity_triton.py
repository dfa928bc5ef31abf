"""Fused Triton forward of vicinity attention (CUDA; CPU via ``TRITON_INTERPRET=1``).

Split of the work:

* the key/value state ``K'^T [V | 1]`` (four ``d x (d+1)`` blocks per head)
  comes from the separable torch code -- two batched GEMMs whose output is
  tiny, nothing to fuse there;
* the per-token pass, which is where the memory traffic is, runs in one
  kernel: ReLU of ``q``, the four angle-weighted copies of it (built in
  registers, never stored), their products with the state, the normaliser,
  and the official ``abs_clamp`` points. ``q`` is read once and the output
  written once.

Backward is the exact separable path (:func:`vicinity_attention_separable`) run on the
saved ``q``, ``k``, ``v``; it is correct everywhere, only not fused.

Products use IEEE fp32 (``input_precision='ieee'``), not TF32, so the kernel
computes the same function as the torch path to fp32 rounding.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .vicinity_reference import (
    ABS_CLAMP_MAX,
    ABS_CLAMP_MIN,
    NORMALISER_EPS,
    check_vicinity_shapes,
)
from .vicinity_separable import (
    clamp_kv_state_,
    vicinity_attention_separable,
    vicinity_kv_state,
)

BLOCK_TOKENS = 64


@triton.jit
def _vicinity_forward_kernel(q_ptr, state_ptr, out_ptr, num_tokens, width, dim,
                             row_scale, col_scale, eps, lo, hi,
                             CLAMP: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr):
    """One program: ``BLOCK_N`` tokens of one (batch, head) map.

    ``q``: ``(BH, N, d)`` contiguous fp32; ``state``: ``(BH, 4, d, d + 1)``
    contiguous fp32 (last column: the angle-weighted key sums).
    """
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    tokens = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    chans = tl.arange(0, BLOCK_D)
    tok_ok = tokens < num_tokens
    chan_ok = chans < dim
    tile_ok = tok_ok[:, None] & chan_ok[None, :]

    q = tl.load(q_ptr + bh * num_tokens * dim + tokens[:, None] * dim + chans[None, :],
                mask=tile_ok, other=0.0)
    q = tl.maximum(q, 0.0)
    a = (tokens // width).to(tl.float32) * row_scale
    b = (tokens % width).to(tl.float32) * col_scale

    num = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    den = tl.zeros((BLOCK_N, ), dtype=tl.float32)
    mat_ok = chan_ok[:, None] & chan_ok[None, :]
    for t in tl.static_range(4):
        if t == 0:
            weight = tl.cos(a)
        elif t == 1:
            weight = tl.sin(a)
        elif t == 2:
            weight = tl.cos(b)
        else:
            weight = tl.sin(b)
        q_t = q * weight[:, None]
        base = state_ptr + (bh * 4 + t) * dim * (dim + 1)
        kv = tl.load(base + chans[:, None] * (dim + 1) + chans[None, :], mask=mat_ok, other=0.0)
        k_sum = tl.load(base + chans * (dim + 1) + dim, mask=chan_ok, other=0.0)
        num += tl.dot(q_t, kv, input_precision='ieee')
        den += tl.sum(q_t * k_sum[None, :], axis=1)

    z = 1.0 / (den + eps)
    if CLAMP:
        # z > 0 (den sums non-negative products), so abs_clamp(z) is a clamp and
        # abs_clamp(abs_clamp(num) * z) = sign(num) * clamp(clamp(|num|) * z).
        z = tl.minimum(tl.maximum(z, lo), hi)
        mag = tl.minimum(tl.maximum(tl.abs(num), lo), hi) * z[:, None]
        mag = tl.minimum(tl.maximum(mag, lo), hi)
        out = tl.where(num > 0, mag, tl.where(num < 0, -mag, 0.0))
    else:
        out = num * z[:, None]
    tl.store(out_ptr + bh * num_tokens * dim + tokens[:, None] * dim + chans[None, :], out,
             mask=tile_ok)


def _forward(q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
             kv_hw: tuple[int, int], clamp: bool, eps: float) -> Tensor:
    bsz, heads, num_tokens, dim = q.shape
    q3 = q.float().reshape(bsz * heads, num_tokens, dim).contiguous()
    state = vicinity_kv_state(k.float().reshape(bsz * heads, *kv_hw, dim),
                      v.float().reshape(bsz * heads, *kv_hw, dim))
    if clamp:
        clamp_kv_state_(state)
    out = torch.empty_like(q3)
    grid = (triton.cdiv(num_tokens, BLOCK_TOKENS), bsz * heads)
    _vicinity_forward_kernel[grid](
        q3, state.contiguous(), out, num_tokens, q_hw[1], dim,
        math.pi / 2 / q_hw[0], math.pi / 2 / q_hw[1], eps, ABS_CLAMP_MIN, ABS_CLAMP_MAX,
        CLAMP=clamp, BLOCK_N=BLOCK_TOKENS, BLOCK_D=max(16, triton.next_power_of_2(dim)))
    return out.view(bsz, heads, num_tokens, dim)


class _TritonVicinity(torch.autograd.Function):
    """Fused forward; backward through the exact torch path (``q, k, v`` saved)."""

    @staticmethod
    def forward(ctx, q, k, v, q_hw, kv_hw, clamp, eps):
        ctx.save_for_backward(q, k, v)
        ctx.args = (q_hw, kv_hw, clamp, eps)
        return _forward(q, k, v, q_hw, kv_hw, clamp, eps).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        inputs = [t.detach().requires_grad_(True) for t in ctx.saved_tensors]
        with torch.enable_grad():
            out = vicinity_attention_separable(*inputs, *ctx.args)
        grads = torch.autograd.grad(out, inputs, grad_out)
        return (*grads, None, None, None, None)


def vicinity_attention_triton(q: Tensor, k: Tensor, v: Tensor,
                              q_hw: tuple[int, int],
                              kv_hw: tuple[int, int] | None = None,
                              clamp: bool = True,
                              eps: float = NORMALISER_EPS) -> Tensor:
    """Same arguments and result as :func:`vicinity_attention_reference`."""
    kv_hw = q_hw if kv_hw is None else kv_hw
    check_vicinity_shapes(q, k, v, q_hw, kv_hw)
    with torch.autocast(q.device.type, enabled=False):
        return _TritonVicinity.apply(q, k, v, tuple(q_hw), tuple(kv_hw), bool(clamp),
                                     float(eps))
