"""PVTv2 spatial-reduction attention (the "PVTv2" row of VVT Table VII)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from ..layers.kv_reduction import KVReductionMixin
from .heads import check_heads, merge_heads, split_heads


@ATTENTIONS.register_module(name=['spatial_reduction', 'SpatialReductionAttention'])
class SpatialReductionAttention(KVReductionMixin, BaseModule):
    """Softmax attention whose keys/values come from a reduced token grid.

    Queries keep every token; keys and values are computed from an
    ``sr x sr``, stride-``sr`` convolution of the token map followed by a
    LayerNorm (PVT/PVTv2 SRA), so the cost is ``O(N^2 / sr^2)``. PVTv2 uses
    ``sr_ratios=[8, 4, 2, 1]`` over the four stages; VVT passes a stage's
    ratio here from its own ``sr_ratios`` argument.

    Maps whose sides are not multiples of ``sr_ratio`` are zero-padded at the
    bottom/right before the reduction (as :class:`VicinityAttention` does),
    where PVTv2's convolution would silently drop the last rows/columns and
    fail outright on maps smaller than ``sr_ratio``.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads.
        sr_ratio: spatial reduction of keys/values; 1 disables it (then this
            is plain softmax attention with separate q and kv projections).
        qkv_bias: bias in the q and kv projections (PVTv2 default).
        norm_cfg: norm after the reduction (PVTv2: LayerNorm, eps 1e-5).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 qkv_bias: bool = True,
                 norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.init_kv_reduction(embed_dims, sr_ratio, norm_cfg)
        # Without a reduction there are no positions: class tokens may join.
        self.takes_extra_tokens = self.sr_ratio == 1

    def reduce_tokens(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Tokens that keys and values are computed from, ``(B, N', C)``."""
        return self.reduce_kv(x, hw_shape)[0]

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens laid out row-major on ``hw_shape``."""
        q = split_heads(self.q(x), self.num_heads)
        k, v = (split_heads(t, self.num_heads)
                for t in self.kv(self.reduce_tokens(x, hw_shape)).chunk(2, dim=-1))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
