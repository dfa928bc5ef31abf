"""cosFormer attention: 1D cos re-weighting of the flattened tokens.

The "cosFormer" row of VVT Table VII and the "VVT 1D locality" row of
Table VI: the paper's point is that a 1D locality prior over the row-major
token order is the wrong prior for images (vertical neighbours are ``W``
tokens apart).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from .heads import check_heads, merge_heads, split_heads


def cosformer_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = 1e-6) -> Tensor:
    """cosFormer attention of ``(B, heads, N, d)`` tensors, ``O(N d^2)``.

    ``S(i, j) = relu(q_i) . relu(k_j) * cos(pi/2 * (i - j) / M)`` with
    ``M = N`` (the cosFormer re-weighting), output
    ``sum_j S(i, j) v_j / max(sum_j S(i, j), eps)``. ``|i - j| < M`` keeps the
    weight positive. The cosine splits into ``cos a_i cos a_j + sin a_i sin a_j``
    with ``a_i = pi/2 * i / M``, so it runs as linear attention on
    ``[q cos a, q sin a]`` and ``[k cos a, k sin a]``.
    """
    num_tokens = q.shape[2]
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        angle = torch.arange(num_tokens, device=q.device, dtype=work) * (
            math.pi / 2 / num_tokens)
        trig = torch.stack([angle.cos(), angle.sin()], dim=-1)[:, None, :]  # (N, 1, 2)

        def features(t: Tensor) -> Tensor:
            t = F.relu(t.to(work)).unsqueeze(-1) * trig  # (B, h, N, d, 2)
            return t.flatten(-2)

        q_feat, k_feat = features(q), features(k)
        kv = k_feat.transpose(-2, -1) @ v.to(work)  # (B, h, 2d, d)
        den = q_feat @ k_feat.sum(dim=2).unsqueeze(-1)  # (B, h, N, 1)
        out = (q_feat @ kv) / den.clamp_min(eps)
    return out.to(q.dtype)


@ATTENTIONS.register_module(name=['cosformer', 'CosFormerAttention'])
class CosFormerAttention(BaseModule):
    """Linear attention with ReLU features and 1D cosine re-weighting.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads.
        qkv_bias: bias in the joint q/k/v projection.
        eps: lower bound of the normaliser (official cosFormer: 1e-6).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 eps: float = 1e-6,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.eps = eps
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    # Positions play no part, so class tokens may join the grid tokens.
    takes_extra_tokens = True

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens; only their flattened order is used."""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(merge_heads(cosformer_attention(q, k, v, self.eps)))
