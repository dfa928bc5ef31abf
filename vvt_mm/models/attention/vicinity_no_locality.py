"""The VVT block without its 2D locality ("VVT w/o locality", VVT Table VI).

Same feature-reduced projections, FPC gate, spatial reduction, clamps,
parameters and key names as :class:`VicinityAttention` (official VVT weights
load into it unchanged); only the similarity drops the cosine re-weighting.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vvt_mm.ops.vicinity_reference import abs_clamp, official_constants
from vvt_mm.registry import ATTENTIONS

from .vicinity import VicinityAttention


def relu_linear_attention(q: Tensor, k: Tensor, v: Tensor, clamp: bool = True,
                          eps: float | None = None) -> Tensor:
    """``sum_j S(i, j) v_j / (sum_j S(i, j) + eps)``, ``S(i, j) = relu(q_i) . relu(k_j)``.

    Linear attention on ``(B, heads, N, d)`` tensors, ``O(N d^2)``, in float32
    even under autocast (the key-value state sums over every token). With
    ``clamp`` the official ``abs_clamp`` is applied where the vicinity core
    applies it: key-value state, normaliser, numerator and output. ``eps``
    ``None`` is the official
    :data:`~vvt_mm.ops.vicinity_reference.NORMALISER_EPS`.
    """
    if eps is None:
        eps = official_constants()[2]
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = F.relu(q.to(work)), F.relu(k.to(work)), v.to(work)
        kv = k.transpose(-2, -1) @ v  # (B, h, d, d)
        if clamp:
            kv = abs_clamp(kv)
        z = 1.0 / (q @ k.sum(dim=2).unsqueeze(-1) + eps)  # (B, h, N, 1)
        out = q @ kv
        if clamp:
            z, out = abs_clamp(z), abs_clamp(out)
        out = out * z
        if clamp:
            out = abs_clamp(out)
    return out


@ATTENTIONS.register_module(name=['vicinity_no_locality', 'VicinityNoLocalityAttention'])
class VicinityNoLocalityAttention(VicinityAttention):
    """:class:`VicinityAttention` with plain ReLU linear attention as its core.

    Takes the same arguments; ``impl`` is accepted but unused (there is one
    implementation of the plain core).
    """

    @property
    def takes_extra_tokens(self) -> bool:
        """Positions enter only through a key/value reduction."""
        return self.sr_ratio == 1

    def attention_core(self, q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                       kv_hw: tuple[int, int]) -> Tensor:
        """The similarity without positions; grids are only for the interface."""
        return relu_linear_attention(q, k, v, clamp=self.clamp).to(q.dtype)
