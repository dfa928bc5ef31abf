"""Fused Triton forward and backward of vicinity attention (CUDA; CPU via ``TRITON_INTERPRET=1``).

Split of the work:

* the key/value state ``K'^T [V | 1]`` (four ``d x (d+1)`` blocks per head)
  comes from the separable torch code -- two batched GEMMs whose output is
  tiny, nothing to fuse there;
* the per-token pass, which is where the memory traffic is, runs in one
  kernel: ReLU of ``q``, the four angle-weighted copies of it (built in
  registers, never stored), their products with the state, the normaliser,
  and the official ``abs_clamp`` points. ``q`` is read once and the output
  written once.

* backward's per-token pass is one kernel too: it recomputes the numerator,
  normaliser and clamp masks from ``q`` and the state in registers, writes
  ``dq`` and each program's partial ``d state`` (summed in torch: a fixed
  order, so results do not depend on scheduling, unlike atomics); the key
  side (``dk``, ``dv`` from ``d state``) is the separable torch code's GEMMs.

**Never the reason a job dies.** When a kernel fails to compile or launch
(an unsupported GPU, a Triton/driver mismatch), the first failure warns once
and this call and every later one run the separable torch path
(:func:`vicinity_attention_separable`), which computes the same function.

Products use IEEE fp32 (``input_precision='ieee'``), not TF32, so the kernel
computes the same function as the torch path to fp32 rounding.
"""
from __future__ import annotations

import math
import warnings

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
    vicinity_kv_state_backward,
)

__all__ = ['BLOCK_TOKENS', 'vicinity_attention_triton', 'kernels_disabled']

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

    num, den = _numerator_and_normaliser(q, a, b, state_ptr, bh, chans, chan_ok, dim,
                                         BLOCK_N, BLOCK_D)
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


@triton.jit
def _angle_weight(a, b, T: tl.constexpr):
    """Block ``T`` of ``Q'``'s weights: cos a, sin a, cos b, sin b."""
    if T == 0:
        return tl.cos(a)
    elif T == 1:
        return tl.sin(a)
    elif T == 2:
        return tl.cos(b)
    else:
        return tl.sin(b)


@triton.jit
def _numerator_and_normaliser(q, a, b, state_ptr, bh, chans, chan_ok, dim,
                              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """``sum_t (q w_t) KV_t`` and ``sum_t (q w_t) . ksum_t`` of a token block.

    ``q``: the block's ReLU'd queries; ``w_t``: :func:`_angle_weight`; the
    state of map ``bh`` holds ``KV_t`` and, in its last column, ``ksum_t``.
    """
    num = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    den = tl.zeros((BLOCK_N, ), dtype=tl.float32)
    mat_ok = chan_ok[:, None] & chan_ok[None, :]
    for t in tl.static_range(4):
        q_t = q * _angle_weight(a, b, t)[:, None]
        base = state_ptr + (bh * 4 + t) * dim * (dim + 1)
        kv = tl.load(base + chans[:, None] * (dim + 1) + chans[None, :], mask=mat_ok, other=0.0)
        k_sum = tl.load(base + chans * (dim + 1) + dim, mask=chan_ok, other=0.0)
        num += tl.dot(q_t, kv, input_precision='ieee')
        den += tl.sum(q_t * k_sum[None, :], axis=1)
    return num, den


@triton.jit
def _vicinity_backward_kernel(q_ptr, grad_ptr, state_ptr, grad_q_ptr, grad_state_ptr,
                              num_tokens, width, dim, row_scale, col_scale, eps, lo, hi,
                              CLAMP: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr):
    """One program: ``dq`` of ``BLOCK_N`` tokens and their share of ``d state``.

    ``grad_state``: ``(BH, programs, 4, d, d + 1)``, this program's partial sums.
    """
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    tokens = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    chans = tl.arange(0, BLOCK_D)
    tok_ok = tokens < num_tokens
    chan_ok = chans < dim
    tile_ok = tok_ok[:, None] & chan_ok[None, :]
    mat_ok = chan_ok[:, None] & chan_ok[None, :]
    offs = bh * num_tokens * dim + tokens[:, None] * dim + chans[None, :]

    q_raw = tl.load(q_ptr + offs, mask=tile_ok, other=0.0)
    q = tl.maximum(q_raw, 0.0)
    grad = tl.load(grad_ptr + offs, mask=tile_ok, other=0.0)
    a = (tokens // width).to(tl.float32) * row_scale
    b = (tokens % width).to(tl.float32) * col_scale

    # Recompute the forward's numerator and normaliser.
    num, den = _numerator_and_normaliser(q, a, b, state_ptr, bh, chans, chan_ok, dim,
                                         BLOCK_N, BLOCK_D)
    z = 1.0 / (den + eps)

    # Through the clamps (see the separable forward for why this is the official
    # derivative): d out / d num = z_c where neither clamp is active, and
    # d out / d z_c = sign(num) clamp(|num|) where the outer one is inactive.
    if CLAMP:
        z_c = tl.minimum(tl.maximum(z, lo), hi)
        mag = tl.abs(num)
        mag_c = tl.minimum(tl.maximum(mag, lo), hi)
        scaled = mag_c * z_c[:, None]
        keep_out = (scaled >= lo) & (scaled <= hi)
        keep_num = (mag >= lo) & (mag <= hi)
        sign = tl.where(num > 0, 1.0, tl.where(num < 0, -1.0, 0.0))
        grad_out = tl.where(keep_out, grad, 0.0)
        grad_num = tl.where(keep_num, grad_out, 0.0) * z_c[:, None]
        grad_z = tl.sum(grad_out * sign * mag_c, axis=1)
        grad_z = tl.where((z >= lo) & (z <= hi), grad_z, 0.0)
    else:
        grad_num = grad * z[:, None]
        grad_z = tl.sum(grad * num, axis=1)
    grad_den = -grad_z * z * z
    grad_num = tl.where(tile_ok, grad_num, 0.0)
    grad_den = tl.where(tok_ok, grad_den, 0.0)

    grad_q = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    programs = tl.num_programs(0)
    for t in tl.static_range(4):
        weight = _angle_weight(a, b, t)
        q_t = q * weight[:, None]
        base = state_ptr + (bh * 4 + t) * dim * (dim + 1)
        kv = tl.load(base + chans[:, None] * (dim + 1) + chans[None, :], mask=mat_ok, other=0.0)
        k_sum = tl.load(base + chans * (dim + 1) + dim, mask=chan_ok, other=0.0)
        grad_q_t = tl.dot(grad_num, tl.trans(kv), input_precision='ieee')
        grad_q_t += grad_den[:, None] * k_sum[None, :]
        grad_q += grad_q_t * weight[:, None]
        # This block's share of d kv_t = q_t^T grad_num and d k_sum_t = q_t^T grad_den.
        grad_kv = tl.dot(tl.trans(q_t), grad_num, input_precision='ieee')
        grad_ks = tl.sum(q_t * grad_den[:, None], axis=0)
        out_base = grad_state_ptr + ((bh * programs + pid_n) * 4 + t) * dim * (dim + 1)
        tl.store(out_base + chans[:, None] * (dim + 1) + chans[None, :], grad_kv, mask=mat_ok)
        tl.store(out_base + chans * (dim + 1) + dim, grad_ks, mask=chan_ok)
    grad_q = tl.where(q_raw > 0, grad_q, 0.0)
    tl.store(grad_q_ptr + offs, grad_q, mask=tile_ok)


def _block_d(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


def _launch_forward(q3: Tensor, state: Tensor, q_hw: tuple[int, int], clamp: bool,
                    eps: float) -> Tensor:
    groups, num_tokens, dim = q3.shape
    out = torch.empty_like(q3)
    grid = (triton.cdiv(num_tokens, BLOCK_TOKENS), groups)
    _vicinity_forward_kernel[grid](
        q3, state, out, num_tokens, q_hw[1], dim,
        math.pi / 2 / q_hw[0], math.pi / 2 / q_hw[1], eps, ABS_CLAMP_MIN, ABS_CLAMP_MAX,
        CLAMP=clamp, BLOCK_N=BLOCK_TOKENS, BLOCK_D=_block_d(dim))
    return out


def _launch_backward(q3: Tensor, grad3: Tensor, state: Tensor, q_hw: tuple[int, int],
                     clamp: bool, eps: float) -> tuple[Tensor, Tensor]:
    """``dq`` ``(G, N, d)`` and ``d state`` ``(G, 4, d, d + 1)`` (before the state clamp)."""
    groups, num_tokens, dim = q3.shape
    programs = triton.cdiv(num_tokens, BLOCK_TOKENS)
    grad_q = torch.empty_like(q3)
    partial = q3.new_empty(groups, programs, 4, dim, dim + 1)
    _vicinity_backward_kernel[(programs, groups)](
        q3, grad3, state, grad_q, partial, num_tokens, q_hw[1], dim,
        math.pi / 2 / q_hw[0], math.pi / 2 / q_hw[1], eps, ABS_CLAMP_MIN, ABS_CLAMP_MAX,
        CLAMP=clamp, BLOCK_N=BLOCK_TOKENS, BLOCK_D=_block_d(dim))
    return grad_q, partial.sum(dim=1)


class _TritonVicinity(torch.autograd.Function):
    """Fused forward and query-side backward; the key side through torch GEMMs.

    Saves ``q, k, v`` (as fp32 ``(G, ., d)`` maps), the clamped state and its
    clamp mask: no per-token tensor besides the inputs.
    """

    @staticmethod
    def forward(ctx, q, k, v, q_hw, kv_hw, clamp, eps):
        bsz, heads, num_tokens, dim = q.shape
        q3 = q.float().reshape(bsz * heads, num_tokens, dim).contiguous()
        k4 = k.float().reshape(bsz * heads, *kv_hw, dim)
        v4 = v.float().reshape(bsz * heads, *kv_hw, dim)
        state = vicinity_kv_state(k4, v4)
        state_mask = clamp_kv_state_(state) if clamp else None
        state = state.contiguous()
        out = _run_kernel(_launch_forward, q3, state, q_hw, clamp, eps)
        ctx.save_for_backward(q3, k4, v4, state, state_mask)
        ctx.args = (q_hw, kv_hw, clamp, eps)
        ctx.shape, ctx.dtypes = q.shape, (q.dtype, k.dtype, v.dtype)
        return out.view(q.shape).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q3, k4, v4, state, state_mask = ctx.saved_tensors
        q_hw, kv_hw, clamp, eps = ctx.args
        grad3 = grad_out.float().reshape(q3.shape).contiguous()
        try:
            grad_q, grad_state = _run_kernel(_launch_backward, q3, grad3, state, q_hw, clamp,
                                             eps)
        except _KernelUnavailable:
            return (*_torch_backward(ctx, grad_out), None, None, None, None)
        if state_mask is not None:
            grad_state[..., :-1] *= state_mask
        grad_k, grad_v = vicinity_kv_state_backward(k4, v4, grad_state)
        bsz, heads, _, dim = ctx.shape
        grads = [g.view(bsz, heads, -1, dim).to(dt)
                 for g, dt in zip((grad_q, grad_k, grad_v), ctx.dtypes)]
        return (*grads, None, None, None, None)


def _torch_backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients through the separable torch path (the kernel could not run)."""
    q3, k4, v4, _, _ = ctx.saved_tensors
    q_hw, kv_hw, clamp, eps = ctx.args
    bsz, heads, num_tokens, dim = ctx.shape
    inputs = [t.detach().reshape(bsz, heads, -1, dim).requires_grad_(True)
              for t in (q3, k4, v4)]
    with torch.enable_grad():
        out = vicinity_attention_separable(*inputs, q_hw, kv_hw, clamp, eps)
    grads = torch.autograd.grad(out, inputs, grad_out.float())
    return tuple(g.to(dt) for g, dt in zip(grads, ctx.dtypes))


# Set after the first kernel failure in this process: later calls skip Triton.
_DISABLED: list[str] = []


def kernels_disabled() -> str | None:
    """Why the Triton kernels are off in this process (``None``: they are on)."""
    return _DISABLED[0] if _DISABLED else None


class _KernelUnavailable(RuntimeError):
    pass


def _run_kernel(launch, *args):
    """Run a kernel launcher; on its first failure warn once, disable Triton, raise
    :class:`_KernelUnavailable` so the caller takes the torch path."""
    if _DISABLED:
        raise _KernelUnavailable(_DISABLED[0])
    try:
        return launch(*args)
    except Exception as err:  # compile errors, missing driver, launch failures
        reason = f'{type(err).__name__}: {(str(err).strip().splitlines() or [""])[0]}'[:200]
        _DISABLED.append(reason)
        warnings.warn(f'vicinity attention: the Triton kernel failed ({reason}); using the '
                      'separable torch path (same function) from now on in this process',
                      RuntimeWarning, stacklevel=3)
        raise _KernelUnavailable(reason) from err


def vicinity_attention_triton(q: Tensor, k: Tensor, v: Tensor,
                              q_hw: tuple[int, int],
                              kv_hw: tuple[int, int] | None = None,
                              clamp: bool = True,
                              eps: float = NORMALISER_EPS) -> Tensor:
    """Same arguments and result as :func:`vicinity_attention_reference`.

    Falls back to :func:`vicinity_attention_separable` (warning once per
    process) when the kernels cannot compile or run here.
    """
    kv_hw = q_hw if kv_hw is None else kv_hw
    check_vicinity_shapes(q, k, v, q_hw, kv_hw)
    if not _DISABLED:
        try:
            with torch.autocast(q.device.type, enabled=False):
                return _TritonVicinity.apply(q, k, v, tuple(q_hw), tuple(kv_hw), bool(clamp),
                                             float(eps))
        except _KernelUnavailable:
            pass
    return vicinity_attention_separable(q, k, v, q_hw, kv_hw, clamp, eps)
