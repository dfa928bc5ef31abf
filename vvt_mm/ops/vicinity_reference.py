"""Vicinity attention, the official formulation and the pieces every form shares.

The similarity of query ``i`` (row ``u_i``, column ``r_i`` of an ``H x W`` map)
and key ``j`` is (VVT paper, Eq. 8-10)::

    S(i, j) = relu(q_i) . relu(k_j) * (cos(a_i - a_j) + cos(b_i - b_j))
    a = (pi / 2) * row / H,   b = (pi / 2) * col / W

and the output is ``sum_j S(i, j) v_j / (sum_j S(i, j) + eps)``.

:func:`vicinity_attention_reference` is the official formulation: it builds
``Q' = [q cos a, q sin a, q cos b, q sin b]`` (and ``K'``), i.e. ``N x 4d``
tensors, and costs ``8 N d^2`` multiply-adds. It is plain aten code, so it is
also what the exporters (``torch.export``, ONNX) record: its angles come from
the traced ``H, W``, so an exported graph is right at every size. The faster
forms live in :mod:`.vicinity_separable` and :mod:`.vicinity_triton`.

Every form applies the official ``abs_clamp`` (``sign(t) * clamp(|t|, 1e-4,
1e4)``) at the same points (key-value state, normaliser, output before and
after normalisation), so converted official weights see the same function.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'ABS_CLAMP_MAX', 'ABS_CLAMP_MIN', 'NORMALISER_EPS', 'abs_clamp', 'check_vicinity_shapes',
    'official_constants', 'vicinity_angles', 'vicinity_attention_reference'
]

ABS_CLAMP_MIN = 1e-4
ABS_CLAMP_MAX = 1e4
NORMALISER_EPS = 1e-4


@torch.compiler.assume_constant_result
def official_constants() -> tuple[float, float, float]:
    """``(ABS_CLAMP_MIN, ABS_CLAMP_MAX, NORMALISER_EPS)`` as compile-time constants.

    With ``dynamic=True`` dynamo makes module-level floats symbolic inputs,
    and fails (``lift_tracked_freevar_to_input``) when one is read in two
    activation-checkpointed blocks; read through here they are constants.
    """
    return ABS_CLAMP_MIN, ABS_CLAMP_MAX, NORMALISER_EPS


class _AbsClamp(torch.autograd.Function):
    """``sign(t) * clamp(|t|, lo, hi)`` saving a 1-byte mask instead of floats.

    Its derivative is 1 where ``lo <= |t| <= hi`` and 0 elsewhere (the clamp is
    flat there and ``sign`` is piecewise constant): what autograd derives for
    the official expression, except exactly at ``|t| == lo`` or ``hi``, where
    torch's ``clamp`` backward (scalar bounds) takes the subgradient 0 and
    every clamp of this package takes 1.
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
    """The official magnitude clamp; exact zeros stay zero.

    Under ``torch.compile`` it is a ``where`` with the same value and
    gradient (``t`` itself where the clamp is inactive, bounds included):
    dynamo fails to trace two chained ``autograd.Function`` calls with dynamic
    shapes, and the compiler picks what to save for backward itself.
    """
    if torch.compiler.is_compiling():
        lo, hi, _ = official_constants()
        mag = t.abs()
        inside = (mag >= lo) & (mag <= hi)
        return torch.where(inside, t, mag.clamp(lo, hi).detach() * t.sign())
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


def check_vicinity_shapes(q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
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
    check_vicinity_shapes(q, k, v, q_hw, kv_hw)
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
    # Row and column of every token from its index (what vicinity_angles gives
    # per row/column, value for value): plain arange / floor-div / mod, which
    # the exporters translate for symbolic h, w (ONNX's repeat_interleave does not).
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    token = torch.arange(h * w, device=x.device)
    row = token // w
    col = token - row * w  # token % w; ONNX has no remainder by a symbolic scalar
    a = (row.to(work) * (math.pi / 2 / h)).to(x.dtype)[:, None]
    b = (col.to(work) * (math.pi / 2 / w)).to(x.dtype)[:, None]
    return torch.cat([x * a.cos(), x * a.sin(), x * b.cos(), x * b.sin()], dim=-1)
