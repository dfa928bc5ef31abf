"""Vicinity attention in separable form: ``4 N d^2`` multiply-adds, no ``N x 4d`` tensors.

``a`` depends only on a token's row and ``b`` only on its column, so the four
``d x d`` key-value states of the official formulation are weighted sums of
per-row (``R_u``) and per-column (``C_r``) sums of ``k v^T``, and query ``i``
needs ``q_i^T (M_{u_i} + P_{r_i})`` with ``M_u = cos a_u KV_cos_a + sin a_u
KV_sin_a`` (``P_r`` likewise for columns). A ones column appended to ``v``
yields the normaliser from the same products.

The forward and a hand-written backward (the transposes of forward's four
batched GEMMs, twice: ``8 N d^2``) walk the grid in cache-sized blocks of rows
and keep only ``q, k, v``, the output, the small state, the per-token
normaliser and two 1-byte clamp masks: at 128x128 tokens (d=48, batch 2) the
forward+backward peak memory is about 0.15x the reference's. On CPU the time
is bounded by MKL's rate on these small ``(W x d) @ (d x (d+1))`` GEMMs.

**One op for the compiler and the exporters.** The two passes are registered
as ``torch.library`` custom ops (``vvt_mm::vicinity_separable_forward`` /
``_backward``) with fake (shape) functions and an autograd formula. We chose an
opaque op over making the blocked loops traceable: the blocking, the in-place
``out=`` writes and the saved 1-byte masks are what make the kernel fast and
small, and a tracer would either break the graph on them or unroll a loop whose
trip count depends on the map size (recompiling per size). As one op,
``torch.compile(fullgraph=True)`` sees a single node with symbolic shapes
(``dynamic=True`` compiles once for all sizes) and fuses everything around it;
exporters take the official formulation instead (see :mod:`.vicinity_reference`),
which computes the same function in plain aten ops.

The state sums run over every token (65k at 1024^2 in stage 1) and would
overflow fp16, so fp16/bf16 inputs are computed in fp32 (also under autocast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .vicinity_reference import (
    ABS_CLAMP_MAX,
    ABS_CLAMP_MIN,
    NORMALISER_EPS,
    check_vicinity_shapes,
    vicinity_angles,
)

__all__ = [
    'BLOCK_ELEMENTS', 'clamp_kv_state_', 'vicinity_attention_separable', 'vicinity_kv_state',
    'vicinity_kv_state_backward'
]


def vicinity_attention_separable(q: Tensor, k: Tensor, v: Tensor,
                                 q_hw: tuple[int, int],
                                 kv_hw: tuple[int, int] | None = None,
                                 clamp: bool = True,
                                 eps: float = NORMALISER_EPS) -> Tensor:
    """Separable exact form; same arguments and result as
    :func:`~vvt_mm.ops.vicinity_reference.vicinity_attention_reference`."""
    kv_hw = q_hw if kv_hw is None else kv_hw
    check_vicinity_shapes(q, k, v, q_hw, kv_hw)
    out_dtype = q.dtype
    # fp16/bf16 are lifted to fp32 (the states sum over every token and would
    # overflow fp16); fp32 and fp64 stay as they are.
    work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    with torch.autocast(q.device.type, enabled=False):
        bsz, heads, _, dim = q.shape
        maps = [t.to(work).reshape(bsz * heads, hw[0], hw[1], dim)
                for t, hw in ((q, q_hw), (k, kv_hw), (v, kv_hw))]
        out = torch.ops.vvt_mm.vicinity_separable_forward(*maps, bool(clamp), float(eps),
                                                          keep)[0]
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
    # Equal slabs (128 rows at most 41 per slab: 4 x 32, not 41, 41, 41, 5):
    # a thin last slab runs its GEMMs at a fraction of the rate.
    most = max(1, BLOCK_ELEMENTS // max(row_elements, 1))
    slabs = -(-rows // most)
    step = -(-rows // slabs)
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
    # Broadcasting, not einsum: a K=2 matmul is a slow GEMM shape. Not addcmul_
    # either: its fused multiply-add rounds differently, and on tiny maps under
    # fp16 autocast that moved clamp decisions enough to change parameter
    # gradients by several times fp16's error (tests/reliability/test_numerics.py).
    return (trig[:, 0, None, None] * mats[:, None, 0]).add_(trig[:, 1, None, None] *
                                                           mats[:, None, 1])


def _grid_matmul(x: Tensor, row_mats: Tensor, col_mats: Tensor,
                 x_by_col: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """``x[g, u, r] @ (row_mats[g, u] + col_mats[g, r])`` for a block of rows.

    ``x``: ``(G, U, W, a)``; ``row_mats``: ``(G, U, a, e)``; ``col_mats``:
    ``(G, W, a, e)``. Two batched GEMMs (rows, then columns on ``x_by_col``,
    see :func:`_by_column`), never the per-token matrices. ``out``: a
    contiguous ``(G, U, W, e)`` to write into (saves a copy of the result).
    """
    out = torch.matmul(x, row_mats, out=out) if out is not None else x @ row_mats
    if x_by_col is None:
        x_by_col = _by_column(x)
    out += (x_by_col @ col_mats).transpose(1, 2)
    return out


def _transposed(mats: Tensor) -> Tensor:
    """``mats`` with its last two dimensions swapped, as a contiguous copy.

    For the small states: the per-row and per-column matrices weighed from
    them are right operands of batched GEMMs, which MKL ran ~1.5x slower on a
    transposed view than on contiguous matrices (128 x 49 times 49 x 48, one
    thread).
    """
    return mats.transpose(-2, -1).contiguous()


def _relu_mask_(grad: Tensor, x: Tensor) -> Tensor:
    """``grad`` zeroed in place where ``x <= 0`` (the ReLU's derivative, as autograd's)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, x, 0.0, grad_input=grad)


def _grid_outer(x: Tensor, y: Tensor, x_by_col: Tensor, y_by_col: Tensor,
                row_trig: Tensor, state: Tensor, col_state: Tensor) -> None:
    """Accumulate angle-weighted row sums and plain column sums of ``x_j^T y_j``.

    ``state[:, :2] += sum_u (cos a_u, sin a_u) x_u^T y_u`` (rows of the block)
    and ``col_state += x_r^T y_r`` per column (weighted once at the end).
    """
    per_row = x.transpose(-2, -1) @ y  # (G, U, a, e)
    state[:, :2] += torch.einsum('ut,gude->gtde', row_trig, per_row)
    # Contiguous operands: on the strided column views MKL's batched GEMM ran
    # ~1.4x slower than the copy plus the GEMM (128 columns, d=48).
    col_state += x_by_col.contiguous().transpose(-2, -1) @ y_by_col.contiguous()


def vicinity_kv_state(k: Tensor, v: Tensor) -> Tensor:
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


def clamp_kv_state_(state: Tensor) -> Tensor:
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


# The op pair.
#
# Forward returns, besides the output, what backward needs: the clamped state
# ``(G, 4, d, d+1)``, its clamp mask, the per-token normaliser ``z`` and
# ``dz/d den``, and the two 1-byte output clamp masks. Tensors that do not apply
# (no clamp, or no gradient wanted: ``keep=False``) are returned empty.

_FORWARD_SCHEMA = ('(Tensor q, Tensor k, Tensor v, bool clamp, float eps, bool keep) -> '
                   '(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)')
_BACKWARD_SCHEMA = ('(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor state, '
                    'Tensor state_mask, Tensor out, Tensor z_keep, Tensor z_grad, '
                    'Tensor keep_out, Tensor keep_num) -> (Tensor, Tensor, Tensor)')


@torch.library.custom_op('vvt_mm::vicinity_separable_forward', mutates_args=(),
                         schema=_FORWARD_SCHEMA)
def _separable_forward(q: Tensor, k: Tensor, v: Tensor, clamp: bool, eps: float,
                       keep: bool) -> tuple[Tensor, ...]:
    """Forward on ``(G, H, W, d)`` maps (``G`` = batch x heads).

    Clamps: the normaliser ``z = 1 / (den + eps)`` is positive (``den`` sums
    products of non-negative features), so ``abs_clamp(abs_clamp(num) * z)``
    is ``sign(num) * clamp(clamp(|num|) * z)`` -- the official value, bit for
    bit, in fewer passes. Its derivative in ``num`` is ``z`` where neither
    clamp is active, and in ``z`` it is ``sign(num) clamp(|num|)`` =
    ``out / z`` where the outer clamp is inactive.
    """
    groups, rows, cols, dim = q.shape
    state = vicinity_kv_state(k, v)
    state_mask = clamp_kv_state_(state) if clamp else _nothing(q, torch.bool)
    lo, hi = ABS_CLAMP_MIN, ABS_CLAMP_MAX
    out = q.new_empty(groups, rows, cols, dim)
    # Per token: the (clamped) normaliser z and, for backward, dz/d den.
    z_keep = q.new_empty(groups, rows, cols, 1)
    z_grad = q.new_empty(groups, rows, cols, 1) if keep else _nothing(q)
    masks = clamp and keep
    # 0/1 bytes, not bools: on CPU a float times a uint8 tensor runs 3-20x
    # faster than times a bool one (bools take a slow type-promotion path).
    keep_out = torch.empty_like(out, dtype=torch.uint8) if masks else _nothing(q, torch.uint8)
    keep_num = torch.empty_like(out, dtype=torch.uint8) if masks else _nothing(q, torch.uint8)
    row_trig = _trig(rows, q)
    col_mats = _weigh(_trig(cols, q), state[:, 2:])  # P_r
    for gs, rs in _blocks(groups, rows, cols * (dim + 1)):
        row_mats = _weigh(row_trig[rs], state[gs, :2])  # M_u
        prod = _grid_matmul(F.relu(q[gs, rs]), row_mats, col_mats[gs])
        num, z = prod[..., :dim], prod[..., dim:].add_(eps).reciprocal_()
        if keep:  # d(1 / (den + eps)) / d den = -z^2
            torch.mul(z, z, out=z_grad[gs, rs]).neg_()
        if clamp:
            z_c = z_keep[gs, rs]
            torch.clamp(z, lo, hi, out=z_c)
            mag = num.abs()
            mag_c = mag.clamp(lo, hi)
            if keep:
                z_grad[gs, rs].mul_(z_c == z)
                torch.eq(mag_c, mag, out=keep_num[gs, rs])
            out_mag = mag_c.mul_(z_c)
            out_c = out_mag.clamp(lo, hi)
            if keep:
                torch.eq(out_c, out_mag, out=keep_out[gs, rs])
                keep_num[gs, rs] &= keep_out[gs, rs]
            torch.mul(out_c, num.sign(), out=out[gs, rs])
        else:
            z_keep[gs, rs] = z
            torch.mul(num, z, out=out[gs, rs])
    return out, state, state_mask, z_keep, z_grad, keep_out, keep_num


def _nothing(like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return like.new_empty(0, dtype=dtype or like.dtype)


@_separable_forward.register_fake
def _separable_forward_fake(q, k, v, clamp, eps, keep):
    groups, rows, cols, dim = q.shape
    mask = q.new_empty(groups, 4, dim, dim, dtype=torch.bool) if clamp else \
        _nothing(q, torch.bool)
    per_token = (groups, rows, cols)
    keep_masks = [q.new_empty(*per_token, dim, dtype=torch.uint8) if clamp and keep else
                  _nothing(q, torch.uint8) for _ in range(2)]
    return (q.new_empty(*per_token, dim), q.new_empty(groups, 4, dim, dim + 1), mask,
            q.new_empty(*per_token, 1), q.new_empty(*per_token, 1) if keep else _nothing(q),
            *keep_masks)


@torch.library.custom_op('vvt_mm::vicinity_separable_backward', mutates_args=(),
                         schema=_BACKWARD_SCHEMA)
def _separable_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, state: Tensor,
                        state_mask: Tensor, out: Tensor, z_keep: Tensor, z_grad: Tensor,
                        keep_out: Tensor, keep_num: Tensor) -> tuple[Tensor, ...]:
    """Gradients of ``q, k, v``: eight batched GEMMs (the transposes of forward's
    four, twice) plus three element-wise passes, block by block."""
    groups, rows, cols, dim = q.shape

    # Query side: gradients of q and of the state (through M_u and P_r).
    grad_q = torch.empty_like(q, memory_format=torch.contiguous_format)
    grad_state = torch.zeros_like(state)
    grad_col = q.new_zeros(groups, cols, dim, dim + 1)
    row_trig, col_trig = _trig(rows, q), _trig(cols, q)
    # Weighing the transposed state gives the transposed matrices directly.
    state_t = _transposed(state)
    col_mats_t = _weigh(col_trig, state_t[:, 2:])
    for gs, rs in _blocks(groups, rows, cols * (dim + 1)):
        grad, z = grad_out[gs, rs], z_keep[gs, rs]
        grad_prod = grad.new_empty(grad.shape[:-1] + (dim + 1, ))
        if keep_out.numel():
            grad = torch.mul(grad, keep_out[gs, rs], out=torch.empty_like(grad))
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
        row_mats_t = _weigh(row_trig[rs], state_t[gs, :2])
        _relu_mask_(_grid_matmul(grad_prod, row_mats_t, col_mats_t[gs], grad_by_col,
                                 out=grad_q[gs, rs]), q_raw)
        _grid_outer(q_blk, grad_prod, q_by_col, grad_by_col, row_trig[rs], grad_state[gs],
                    grad_col[gs])
    grad_state[:, 2:] = torch.einsum('rt,grde->gtde', col_trig, grad_col)
    if state_mask.numel():
        grad_state[..., :dim] *= state_mask

    return (grad_q, *vicinity_kv_state_backward(k, v, grad_state))


def vicinity_kv_state_backward(k: Tensor, v: Tensor,
                               grad_state: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of ``k`` and ``v`` (``(G, Hk, Wk, d)``, before the ReLU) from the
    gradient of :func:`vicinity_kv_state`'s (unclamped) result.

    ``R_u = K_u^T [V_u | 1]`` and ``C_r`` likewise, weighted by the kv angles:
    four batched GEMMs, block by block.
    """
    groups, k_rows, k_cols, dim = k.shape
    grad_k = torch.empty_like(k, memory_format=torch.contiguous_format)
    grad_v = torch.empty_like(v, memory_format=torch.contiguous_format)
    row_trig = _trig(k_rows, k)
    col_trig = _trig(k_cols, k)
    # Each product in both layouts, weighed from the state's (a transposing copy
    # of the large per-column matrices is slower than weighing twice).
    grad_kv, grad_kv_t = grad_state[..., :dim].contiguous(), _transposed(grad_state)
    grad_col_k, grad_col_v = _weigh(col_trig, grad_kv_t[:, 2:]), _weigh(col_trig, grad_kv[:, 2:])
    for gs, rs in _blocks(groups, k_rows, k_cols * (dim + 1)):
        k_raw, v_blk = k[gs, rs], _with_ones(v[gs, rs])
        k_blk = F.relu(k_raw)
        _relu_mask_(_grid_matmul(v_blk, _weigh(row_trig[rs], grad_kv_t[gs, :2]),
                                 grad_col_k[gs], out=grad_k[gs, rs]), k_raw)
        _grid_matmul(k_blk, _weigh(row_trig[rs], grad_kv[gs, :2]), grad_col_v[gs],
                     out=grad_v[gs, rs])
    return grad_k, grad_v


@_separable_backward.register_fake
def _separable_backward_fake(grad_out, q, k, v, *saved):
    # The real kernel returns contiguous gradients whatever the inputs' strides.
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v = inputs[:3]
    out, state, state_mask, z_keep, z_grad, keep_out, keep_num = output
    ctx.save_for_backward(q, k, v, state, state_mask, out, z_keep, z_grad, keep_out, keep_num)


def _backward(ctx, grad_out, *unused_grads):
    (q, k, v, state, state_mask, out, z_keep, z_grad, keep_out,
     keep_num) = ctx.saved_tensors
    grads = torch.ops.vvt_mm.vicinity_separable_backward(
        grad_out, q, k, v, state, state_mask, out, z_keep, z_grad, keep_out,
        keep_num)
    return (*grads, None, None, None)


_separable_forward.register_autograd(_backward, setup_context=_setup_context)
