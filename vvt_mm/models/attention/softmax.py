"""Vanilla multi-head softmax attention (the "Vanilla" row of VVT Table VII)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from .heads import check_heads, merge_heads, split_heads


@ATTENTIONS.register_module(name=['softmax', 'SoftmaxAttention'])
class SoftmaxAttention(BaseModule):
    """``softmax(q k^T / sqrt(d)) v`` over every token pair, O(N^2).

    The quadratic baseline the linear attentions are measured against; it
    runs through ``F.scaled_dot_product_attention`` so CUDA picks a fused
    (flash / memory-efficient) kernel where one applies.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads.
        qkv_bias: bias in the joint q/k/v projection (ViT/PVT default).
        attn_drop: dropout on the attention weights while training.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    # Positions play no part, so class tokens may join the grid tokens.
    takes_extra_tokens = True

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens; ``hw_shape`` is unused (no positions)."""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj(merge_heads(out))
