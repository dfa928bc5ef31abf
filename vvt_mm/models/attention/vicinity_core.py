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
  appended to ``v`` yields the normaliser from the same products. It is a
  custom autograd function with a hand-written backward (the transposes of
  forward's four batched GEMMs, twice: ``8 N d^2``) that keeps ``q, k, v``,
  its output, the small state, the per-token normaliser and two 1-byte clamp
  masks, and walks the grid in cache-sized blocks of rows; at 128x128 tokens
  (d=48, batch 2) its forward+backward peak memory is about 0.15x the
  reference's. On CPU its time is bounded by MKL's rate on these small
  ``(W x d) @ (d x (d+1))`` GEMMs: 12 of them per forward+backward.
* :func:`vicinity_attention` dispatches: the fused Triton forward
  (:mod:`vvt_mm.ops.vicinity_triton`) on CUDA when Triton imports, else the
  separable torch path.

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
from torch.autograd.function import once_differentiable

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

    Same arguments and result as :func:`vicinity_attention_reference`. Its
    backward saves only ``q``, ``k``, ``v`` and the ``4 x d x (d+1)`` state and
    recomputes the rest, walking the grid in blocks of rows so temporaries
    stay cache-sized (see :class:`_SeparableVicinity`).
    """
    kv_hw = q_hw if kv_hw is None else kv_hw
    _check_shapes(q, k, v, q_hw, kv_hw)
    out_dtype = q.dtype
    # fp16/bf16 are lifted to fp32 (the states sum over every token and would
    # overflow fp16); fp32 and fp64 stay as they are.
    work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        bsz, heads, _, dim = q.shape
        maps = [t.to(work).reshape(bsz * heads, *hw, dim)
                for t, hw in ((q, q_hw), (k, kv_hw), (v, kv_hw))]
        out = _SeparableVicinity.apply(*maps, bool(clamp), float(eps))
    return out.view(bsz, heads, -1, dim).to(out_dtype)


# Tokens handled at once by the separable path: about 1 MiB of fp32 per
# temporary, so the element-wise passes (ReLU, the clamps and their masks) run
# in L2 cache and no N-sized temporary is ever alive.
BLOCK_ELEMENTS = 1 << 18


def _blocks(groups: int, rows: int, row_elements: int):
    """``(group slice, row slice)`` pairs tiling a ``(groups, rows)`` grid.

    A block is either several whole ``(batch, head)`` maps or some rows of one
    map, so small maps are grouped (less Python overhead) and large ones are
    cut into cache-sized slabs.
    """
    slab = rows * row_elements
    if slab <= BLOCK_ELEMENTS:
        step = max(1, BLOCK_ELEMENTS // max(slab, 1))
        for g in range(0, groups, step):
            yield slice(g, min(g + step, groups)), slice(0, rows)
        return
    step = max(1, BLOCK_ELEMENTS // max(row_elements, 1))
    for g in range(groups):
        for r in range(0, rows, step):
            yield slice(g, g + 1), slice(r, min(r + step, rows))


def _trig(size: int, like: Tensor) -> Tensor:
    """``(size, 2)``: cosine and sine of the grid angles, in ``like``'s dtype."""
    angles = vicinity_angles(size, like.device, like.dtype)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(like.dtype)


def _with_ones(x: Tensor) -> Tensor:
    # The ones column turns every k v^T product into [k v^T | k], so the
    # normaliser's sum_j S(i, j) comes out of the same matmuls as the output.
    return torch.cat([x, x.new_ones(x.shape[:-1] + (1, ))], dim=-1)


def _by_column(x: Tensor) -> Tensor:
    """``(G, U, W, a)`` -> ``(G, W, U, a)``: each column's tokens as one matrix.

    A view when the block holds one map (batched GEMMs take the strides as
    they are); with several maps the batch dimensions cannot be merged and a
    batched matmul on the view would run 3x slower, so it is copied once.
    """
    x_by_col = x.transpose(1, 2)
    return x_by_col if x.shape[0] == 1 else x_by_col.contiguous()


def _weigh(trig: Tensor, mats: Tensor) -> Tensor:
    """``trig[u, 0] * mats[g, 0] + trig[u, 1] * mats[g, 1]``: ``(G, U, d, e)``."""
    # Broadcasting, not einsum: a K=2 matmul is a slow GEMM shape.
    return (trig[:, 0, None, None] * mats[:, None, 0]).add_(trig[:, 1, None, None] *
                                                           mats[:, None, 1])


def _grid_matmul(x: Tensor, row_mats: Tensor, col_mats: Tensor,
                 x_by_col: Tensor | None = None) -> Tensor:
    """``x[g, u, r] @ (row_mats[g, u] + col_mats[g, r])`` for a block of rows.

    ``x``: ``(G, U, W, a)``; ``row_mats``: ``(G, U, a, e)``; ``col_mats``:
    ``(G, W, a, e)``. Two batched GEMMs (rows, then columns on ``x_by_col``,
    see :func:`_by_column`), never the per-token matrices.
    """
    out = x @ row_mats
    if x_by_col is None:
        x_by_col = _by_column(x)
    out += (x_by_col @ col_mats).transpose(1, 2)
    return out


def _grid_outer(x: Tensor, y: Tensor, x_by_col: Tensor, y_by_col: Tensor,
                row_trig: Tensor, state: Tensor, col_state: Tensor) -> None:
    """Accumulate angle-weighted row sums and plain column sums of ``x_j^T y_j``.

    ``state[:, :2] += sum_u (cos a_u, sin a_u) x_u^T y_u`` (rows of the block)
    and ``col_state += x_r^T y_r`` per column (weighted once at the end).
    """
    per_row = x.transpose(-2, -1) @ y  # (G, U, a, e)
    state[:, :2] += torch.einsum('ut,gude->gtde', row_trig, per_row)
    col_state += x_by_col.transpose(-2, -1) @ y_by_col  # (G, W, a, e)


def _kv_state(k: Tensor, v: Tensor) -> Tensor:
    """The official ``K'^T [V | 1]`` as four stacked ``d x (d+1)`` blocks.

    ``k``, ``v``: ``(BH, Hk, Wk, d)`` before the ReLU. Block order (cos a,
    sin a, cos b, sin b) follows ``Q'``; built from per-row sums ``R_u`` and
    per-column sums ``C_r`` of ``k v^T`` (``2 N d^2`` instead of ``4 N d^2``).
    """
    groups, rows, cols, dim = k.shape
    state = k.new_zeros(groups, 4, dim, dim + 1)
    col_kv = k.new_zeros(groups, cols, dim, dim + 1)
    row_trig = _trig(rows, k)
    for gs, rs in _blocks(groups, rows, cols * (dim + 1)):
        k_blk, v_blk = F.relu(k[gs, rs]), _with_ones(v[gs, rs])
        _grid_outer(k_blk, v_blk, _by_column(k_blk), _by_column(v_blk), row_trig[rs],
                    state[gs], col_kv[gs])
    state[:, 2:] = torch.einsum('rt,grde->gtde', _trig(cols, k), col_kv)
    return state


def _clamp_kv_state_(state: Tensor) -> Tensor:
    """The official ``abs_clamp`` of ``K'^T V``, in place; returns where it is inactive.

    The official code clamps ``K'^T V`` but not ``sum_j K'_j`` (the last
    column of the state), so that column is left alone.
    """
    kv_part = state[..., :-1]
    magnitude = kv_part.abs()
    clamped = magnitude.clamp(ABS_CLAMP_MIN, ABS_CLAMP_MAX)
    mask = clamped == magnitude
    kv_part.copy_(clamped.mul_(kv_part.sign()))
    return mask


class _SeparableVicinity(torch.autograd.Function):
    """Separable vicinity attention with a hand-written backward.

    Inputs are ``(BH, H, W, d)`` maps. Autograd through plain separable code
    would keep every ReLU output, product, clamp input and sign (several
    ``N x d`` tensors per clamp). Here forward keeps ``q``, ``k``, ``v`` (the
    ReLU is re-applied block by block, in cache), its own output, the small
    clamped state, the per-token normaliser and two 1-byte clamp masks;
    backward is eight batched GEMMs (the transposes of forward's four, twice)
    plus three element-wise passes.

    Clamps: the normaliser ``z = 1 / (den + eps)`` is positive (``den`` sums
    products of non-negative features), so ``abs_clamp(abs_clamp(num) * z)``
    is ``sign(num) * clamp(clamp(|num|) * z)`` -- the official value, bit for
    bit, in fewer passes. Its derivative in ``num`` is ``z`` where neither
    clamp is active, and in ``z`` it is ``sign(num) clamp(|num|)`` =
    ``out / z`` where the outer clamp is inactive.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, clamp: bool, eps: float) -> Tensor:
        groups, rows, cols, dim = q.shape
        state = _kv_state(k, v)
        state_mask = _clamp_kv_state_(state) if clamp else None
        lo, hi = ABS_CLAMP_MIN, ABS_CLAMP_MAX
        out = q.new_empty(groups, rows, cols, dim)
        # Per token: the (clamped) normaliser z and dz/d den, for backward.
        z_keep = q.new_empty(groups, rows, cols, 1)
        z_grad = q.new_empty(groups, rows, cols, 1)
        keep_out = keep_num = None
        if clamp:
            keep_out = torch.empty_like(out, dtype=torch.bool)
            keep_num = torch.empty_like(out, dtype=torch.bool)
        row_trig = _trig(rows, q)
        col_mats = _weigh(_trig(cols, q), state[:, 2:])  # P_r
        for gs, rs in _blocks(groups, rows, cols * (dim + 1)):
            row_mats = _weigh(row_trig[rs], state[gs, :2])  # M_u
            prod = _grid_matmul(F.relu(q[gs, rs]), row_mats, col_mats[gs])
            num, z = prod[..., :dim], prod[..., dim:].add_(eps).reciprocal_()
            # d(1 / (den + eps)) / d den = -z^2
            torch.mul(z, z, out=z_grad[gs, rs]).neg_()
            if clamp:
                z_c = z_keep[gs, rs]
                torch.clamp(z, lo, hi, out=z_c)
                z_grad[gs, rs].mul_(z_c == z)
                mag = num.abs()
                mag_c = mag.clamp(lo, hi)
                torch.eq(mag_c, mag, out=keep_num[gs, rs])
                out_mag = mag_c.mul_(z_c)
                out_c = out_mag.clamp(lo, hi)
                torch.eq(out_c, out_mag, out=keep_out[gs, rs])
                keep_num[gs, rs] &= keep_out[gs, rs]
                torch.mul(out_c, num.sign(), out=out[gs, rs])
            else:
                z_keep[gs, rs] = z
                torch.mul(num, z, out=out[gs, rs])
        ctx.save_for_backward(q, k, v, state, state_mask, out, z_keep, z_grad,
                              keep_out, keep_num)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (q, k, v, state, state_mask, out, z_keep, z_grad, keep_out,
         keep_num) = ctx.saved_tensors
        groups, rows, cols, dim = q.shape

        # Query side: gradients of q and of the state (through M_u and P_r).
        grad_q = torch.empty_like(q, memory_format=torch.contiguous_format)
        grad_state = torch.zeros_like(state)
        grad_col = q.new_zeros(groups, cols, dim, dim + 1)
        row_trig, col_trig = _trig(rows, q), _trig(cols, q)
        col_mats_t = _weigh(col_trig, state[:, 2:]).transpose(-2, -1)
        for gs, rs in _blocks(groups, rows, cols * (dim + 1)):
            grad, z = grad_out[gs, rs], z_keep[gs, rs]
            grad_prod = grad.new_empty(grad.shape[:-1] + (dim + 1, ))
            if keep_out is not None:
                grad = grad * keep_out[gs, rs]
                torch.mul(grad, keep_num[gs, rs], out=grad_prod[..., :dim])
                grad_prod[..., :dim].mul_(z)
            else:
                torch.mul(grad, z, out=grad_prod[..., :dim])
            # d out / d z = out / z (the outer clamp's mask is already in grad)
            grad_z = torch.linalg.vecdot(grad, out[gs, rs]).unsqueeze_(-1).div_(z)
            torch.mul(grad_z, z_grad[gs, rs], out=grad_prod[..., dim:])

            q_raw = q[gs, rs]
            q_blk = F.relu(q_raw)
            q_by_col, grad_by_col = _by_column(q_blk), _by_column(grad_prod)
            row_mats_t = _weigh(row_trig[rs], state[gs, :2]).transpose(-2, -1)
            grad_q_blk = _grid_matmul(grad_prod, row_mats_t, col_mats_t[gs], grad_by_col)
            torch.ops.aten.threshold_backward.grad_input(
                grad_q_blk, q_raw, 0.0, grad_input=grad_q[gs, rs])
            _grid_outer(q_blk, grad_prod, q_by_col, grad_by_col, row_trig[rs], grad_state[gs],
                        grad_col[gs])
        grad_state[:, 2:] = torch.einsum('rt,grde->gtde', col_trig, grad_col)
        if state_mask is not None:
            grad_state[..., :dim] *= state_mask

        # Key side: R_u = K_u^T [V_u | 1] and C_r likewise, weighted by the kv angles.
        _, k_rows, k_cols, _ = k.shape
        grad_k = torch.empty_like(k, memory_format=torch.contiguous_format)
        grad_v = torch.empty_like(v, memory_format=torch.contiguous_format)
        row_trig = _trig(k_rows, k)
        grad_col_kv = _weigh(_trig(k_cols, k), grad_state[:, 2:])
        grad_col_kv_t = grad_col_kv.transpose(-2, -1)
        for gs, rs in _blocks(groups, k_rows, k_cols * (dim + 1)):
            k_raw, v_blk = k[gs, rs], _with_ones(v[gs, rs])
            k_blk = F.relu(k_raw)
            grad_row_kv = _weigh(row_trig[rs], grad_state[gs, :2])
            grad_k_blk = _grid_matmul(v_blk, grad_row_kv.transpose(-2, -1), grad_col_kv_t[gs])
            torch.ops.aten.threshold_backward.grad_input(
                grad_k_blk, k_raw, 0.0, grad_input=grad_k[gs, rs])
            grad_v[gs, rs] = _grid_matmul(k_blk, grad_row_kv[..., :dim],
                                          grad_col_kv[gs, ..., :dim])
        return grad_q, grad_k, grad_v, None, None


def triton_available(t: Tensor) -> bool:
    """Whether the fused Triton kernel can run on ``t``'s device."""
    if not t.is_cuda:
        return False
    try:
        from vvt_mm.ops import vicinity_triton  # noqa: F401
    except ImportError:
        return False
    return True


# Maps this small run faster through the official formulation on CPU: the
# separable form's per-row/per-column GEMMs get tiny (7x7 maps: 7 x 32 x 33)
# and per-call overhead dominates (measured: forward+backward 0.77x at 7x7 and
# ~1x at 16x16 for the separable form; forward alone ~0.9x up to 24x24).
SMALL_MAP_TOKENS = 256
SMALL_MAP_TOKENS_NO_GRAD = 576


def _torch_impl_for(q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                    kv_hw: tuple[int, int] | None) -> str:
    if q.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled(
            q.device.type):
        return 'torch'  # computes in fp32: the reference would run its GEMMs in fp16
    tokens = max(math.prod(q_hw), math.prod(kv_hw or q_hw))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    limit = SMALL_MAP_TOKENS if grad else SMALL_MAP_TOKENS_NO_GRAD
    return 'reference' if tokens <= limit else 'torch'


def vicinity_attention(q: Tensor, k: Tensor, v: Tensor,
                       q_hw: tuple[int, int],
                       kv_hw: tuple[int, int] | None = None,
                       clamp: bool = True,
                       eps: float = NORMALISER_EPS,
                       impl: str = 'auto') -> Tensor:
    """Vicinity attention, dispatched to an implementation.

    ``impl='auto'`` picks the fused Triton kernel on CUDA when it is available;
    elsewhere the separable torch form, except on small maps (see
    :data:`SMALL_MAP_TOKENS`) where the official formulation's few large GEMMs
    beat many tiny per-row ones. ``'reference'`` is the official formulation.
    All give the same function up to float rounding.
    """
    if impl == 'auto':
        impl = 'triton' if triton_available(q) else _torch_impl_for(q, k, v, q_hw, kv_hw)
    if impl == 'torch':
        return vicinity_attention_torch(q, k, v, q_hw, kv_hw, clamp, eps)
    if impl == 'reference':
        return vicinity_attention_reference(q, k, v, q_hw, kv_hw, clamp, eps)
    if impl == 'triton':
        from vvt_mm.ops.vicinity_triton import vicinity_attention_triton
        return vicinity_attention_triton(q, k, v, q_hw, kv_hw, clamp, eps)
    raise ValueError(f'unknown vicinity attention impl {impl!r}; choose one of {IMPLS}')
