"""Vicinity attention core: pure functions of ``(q, k, v)`` and the token grids.

The similarity of query ``i`` (row ``u_i``, column ``r_i`` of an ``H x W`` map)
and key ``j`` is (VVT paper, Eq. 8-10)::

    S(i, j) = relu(q_i) . relu(k_j) * (cos(a_i - a_j) + cos(b_i - b_j))
    a = (pi / 2) * row / H,   b = (pi / 2) * col / W

and the output is ``sum_j S(i, j) v_j / (sum_j S(i, j) + eps)``.

Two exact implementations live here:

* :func:`vicinity_attention_reference` -- the official formulation: it builds
  ``Q' = [q cos a, q sin a, q cos b, q sin b]`` (and ``K'``), i.e. ``N x 4d``
  tensors, and costs ``8 N d^2`` multiply-adds. Kept for tests and benchmarks.
* :func:`vicinity_attention_torch` -- the separable form. ``a`` depends only on a
  token's row and ``b`` only on its column, so the four ``d x d`` key-value
  states are weighted sums of per-row (``R_u``) and per-column (``C_r``) sums of
  ``k v^T``, and query ``i`` needs ``q_i^T (M_{u_i} + P_{r_i})`` with
  ``M_u = cos a_u KV_cos_a + sin a_u KV_sin_a`` (``P_r`` likewise for columns).
  That is ``4 N d^2`` multiply-adds and no ``N x 4d`` tensor; a ones column
  appended to ``v`` yields the normaliser from the same products.

Both apply the official ``abs_clamp`` (``sign(t) * clamp(|t|, 1e-4, 1e4)``) at the
same points (key-value state, normaliser, output before and after
normalisation) so converted official weights see the same function. The fast
path computes in float32 even under autocast: the states sum over every token
(65k at 1024^2 in stage 1) and would overflow fp16 before any clamp could help.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ABS_CLAMP_MIN = 1e-4
ABS_CLAMP_MAX = 1e4
NORMALISER_EPS = 1e-4
IMPLS = ('auto', 'torch', 'reference', 'triton')


class _AbsClamp(torch.autograd.Function):
    """``sign(t) * clamp(|t|, lo, hi)`` saving a 1-byte mask instead of floats.

    Its derivative is 1 where ``lo <= |t| <= hi`` and 0 elsewhere (the clamp is
    flat there and ``sign`` is piecewise constant), exactly what autograd
    derives for the official expression.
    """

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        mag = t.abs()
        mask = (mag >= ABS_CLAMP_MIN) & (mag <= ABS_CLAMP_MAX)
        ctx.save_for_backward(mask)
        return mag.clamp_(ABS_CLAMP_MIN, ABS_CLAMP_MAX).mul_(t.sign())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (mask,) = ctx.saved_tensors
        return grad * mask


def abs_clamp(t: Tensor) -> Tensor:
    """The official magnitude clamp; exact zeros stay zero."""
    if t.requires_grad:
        return _AbsClamp.apply(t)
    return t.abs().clamp_(ABS_CLAMP_MIN, ABS_CLAMP_MAX).mul_(t.sign())


def vicinity_angles(size: int, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """Angles ``(pi/2) * i / size`` for ``i < size``, shape ``(size,)``.

    Computed in float64 only when asked; any lower precision is computed in
    float32 first (as the official code does) and cast by the caller.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.arange(size, device=device, dtype=work) * (math.pi / 2 / size)


def _check_shapes(q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                  kv_hw: tuple[int, int]) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError('vicinity attention expects q, k, v shaped (B, heads, N, d); '
                         f'got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if q.shape[2] != q_hw[0] * q_hw[1]:
        raise ValueError(f'q has {q.shape[2]} tokens but its grid {q_hw} holds '
                         f'{q_hw[0] * q_hw[1]}')
    if k.shape[2] != kv_hw[0] * kv_hw[1] or v.shape[2] != k.shape[2]:
        raise ValueError(f'k/v have {k.shape[2]}/{v.shape[2]} tokens but their grid '
                         f'{kv_hw} holds {kv_hw[0] * kv_hw[1]}')


def vicinity_attention_reference(q: Tensor, k: Tensor, v: Tensor,
                                 q_hw: tuple[int, int],
                                 kv_hw: tuple[int, int] | None = None,
                                 clamp: bool = True,
                                 eps: float = NORMALISER_EPS) -> Tensor:
    """Official formulation with ``N x 4d`` feature maps (``8 N d^2`` MACs).

    Args:
        q, k, v: ``(B, heads, N, d)`` before the ReLU feature map.
        q_hw: ``(H, W)`` grid of the queries (row-major tokens).
        kv_hw: grid of keys and values; defaults to ``q_hw``.
        clamp: apply the official ``abs_clamp`` points.
        eps: added to the normaliser.

    Returns:
        ``(B, heads, N, d)`` in the dtype of ``q``.
    """
    kv_hw = q_hw if kv_hw is None else kv_hw
    _check_shapes(q, k, v, q_hw, kv_hw)
    q_feat = _separable_features(F.relu(q), q_hw)
    k_feat = _separable_features(F.relu(k), kv_hw)
    kv = k_feat.transpose(-2, -1) @ v  # (B, h, 4d, d)
    if clamp:
        kv = abs_clamp(kv)
    z = 1.0 / ((q_feat * k_feat.sum(dim=2, keepdim=True)).sum(dim=-1) + eps)
    if clamp:
        z = abs_clamp(z)
    out = q_feat @ kv
    if clamp:
        out = abs_clamp(out)
    out = out * z.unsqueeze(-1)
    if clamp:
        out = abs_clamp(out)
    return out


def _separable_features(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """``[x cos a, x sin a, x cos b, x sin b]`` along the channel dimension."""
    h, w = hw
    a = vicinity_angles(h, x.device, x.dtype).repeat_interleave(w).to(x.dtype)[:, None]
    b = vicinity_angles(w, x.device, x.dtype).repeat(h).to(x.dtype)[:, None]
    return torch.cat([x * a.cos(), x * a.sin(), x * b.cos(), x * b.sin()], dim=-1)


def vicinity_attention_torch(q: Tensor, k: Tensor, v: Tensor,
                             q_hw: tuple[int, int],
                             kv_hw: tuple[int, int] | None = None,
                             clamp: bool = True,
                             eps: float = NORMALISER_EPS) -> Tensor:
    """Separable exact form (``4 N d^2`` MACs, no ``N x 4d`` tensors).

    Same arguments and result as :func:`vicinity_attention_reference`.
    """
    kv_hw = q_hw if kv_hw is None else kv_hw
    _check_shapes(q, k, v, q_hw, kv_hw)
    out_dtype = q.dtype
    # fp16/bf16 are lifted to fp32; fp32 and fp64 stay as they are.
    work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        out = _separable_core(q.to(work), k.to(work), v.to(work), q_hw, kv_hw, clamp, eps)
    return out.to(out_dtype)


def _separable_core(q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                    kv_hw: tuple[int, int], clamp: bool, eps: float) -> Tensor:
    bsz, heads, _, dim = q.shape
    h, w = q_hw
    hk, wk = kv_hw
    k = F.relu(k).view(bsz, heads, hk, wk, dim)
    # The ones column turns every k v^T product into [k v^T | k], so the
    # normaliser's sum_j S(i, j) comes out of the same matmuls as the output.
    v1 = torch.cat([v, v.new_ones(v.shape[:-1] + (1, ))], dim=-1)
    v1 = v1.view(bsz, heads, hk, wk, dim + 1)

    row_kv = k.transpose(-2, -1) @ v1  # R_u: (B, h, Hk, d, d+1)
    col_kv = k.permute(0, 1, 3, 4, 2) @ v1.transpose(2, 3)  # C_r: (B, h, Wk, d, d+1)
    a_k = vicinity_angles(hk, q.device, q.dtype)
    b_k = vicinity_angles(wk, q.device, q.dtype)
    # The four blocks of the official K'^T V state, stacked: (B, h, 4, d, d+1).
    state = torch.stack([
        torch.einsum('u,bhude->bhde', a_k.cos(), row_kv),
        torch.einsum('u,bhude->bhde', a_k.sin(), row_kv),
        torch.einsum('r,bhrde->bhde', b_k.cos(), col_kv),
        torch.einsum('r,bhrde->bhde', b_k.sin(), col_kv),
    ], dim=2)
    if clamp:
        # The official code clamps K'^T V but not sum_j K'_j (our last column).
        state = torch.cat([abs_clamp(state[..., :dim]), state[..., dim:]], dim=-1)

    a_q = vicinity_angles(h, q.device, q.dtype)
    b_q = vicinity_angles(w, q.device, q.dtype)
    row_trig = torch.stack([a_q.cos(), a_q.sin()], dim=-1)  # (H, 2)
    col_trig = torch.stack([b_q.cos(), b_q.sin()], dim=-1)  # (W, 2)
    row_mats = torch.einsum('ut,bhtde->bhude', row_trig, state[:, :, :2])  # M_u
    col_mats = torch.einsum('rt,bhtde->bhrde', col_trig, state[:, :, 2:])  # P_r

    q = F.relu(q).view(bsz, heads, h, w, dim)
    out = q @ row_mats + (q.transpose(2, 3) @ col_mats).transpose(2, 3)
    num, den = out[..., :dim], out[..., dim]
    z = 1.0 / (den + eps)
    if clamp:
        num = abs_clamp(num)
        z = abs_clamp(z)
        out = abs_clamp(num * z.unsqueeze(-1))
    else:
        out = num * z.unsqueeze(-1)
    return out.reshape(bsz, heads, h * w, dim)


def triton_available(t: Tensor) -> bool:
    """Whether the fused Triton kernel can run on ``t``'s device."""
    if not t.is_cuda:
        return False
    try:
        from vvt_mm.ops import vicinity_triton  # noqa: F401
    except ImportError:
        return False
    return True


def vicinity_attention(q: Tensor, k: Tensor, v: Tensor,
                       q_hw: tuple[int, int],
                       kv_hw: tuple[int, int] | None = None,
                       clamp: bool = True,
                       eps: float = NORMALISER_EPS,
                       impl: str = 'auto') -> Tensor:
    """Vicinity attention, dispatched to an implementation.

    ``impl='auto'`` picks the fused Triton kernel on CUDA when it is available
    and the separable torch form elsewhere; ``'reference'`` is the official
    formulation. All give the same function up to float rounding.
    """
    if impl == 'auto':
        impl = 'triton' if triton_available(q) else 'torch'
    if impl == 'torch':
        return vicinity_attention_torch(q, k, v, q_hw, kv_hw, clamp, eps)
    if impl == 'reference':
        return vicinity_attention_reference(q, k, v, q_hw, kv_hw, clamp, eps)
    if impl == 'triton':
        from vvt_mm.ops.vicinity_triton import vicinity_attention_triton
        return vicinity_attention_triton(q, k, v, q_hw, kv_hw, clamp, eps)
    raise ValueError(f'unknown vicinity attention impl {impl!r}; choose one of {IMPLS}')
