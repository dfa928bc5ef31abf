"""PVTv2 spatial-reduction attention (the "PVTv2" row of VVT Table VII)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from ..layers.padding import pad_to_multiple
from .heads import check_heads, merge_heads, split_heads


@ATTENTIONS.register_module(name=['spatial_reduction', 'SpatialReductionAttention'])
class SpatialReductionAttention(BaseModule):
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
        if int(sr_ratio) != sr_ratio or sr_ratio < 1:
            raise ValueError(f'sr_ratio must be an integer >= 1, got {sr_ratio}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.sr_ratio = int(sr_ratio)
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, self.sr_ratio, stride=self.sr_ratio)
            self.norm = build_norm_layer(norm_cfg or dict(type='LN', eps=1e-5),
                                         embed_dims)[1]

    def reduce_tokens(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Tokens that keys and values are computed from, ``(B, N', C)``."""
        if self.sr_ratio == 1:
            return x
        bsz, _, channels = x.shape
        h, w = hw_shape
        grid = x.transpose(1, 2).reshape(bsz, channels, h, w)
        grid = pad_to_multiple(grid, self.sr_ratio)
        return self.norm(self.sr(grid).flatten(2).transpose(1, 2))

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens laid out row-major on ``hw_shape``."""
        q = split_heads(self.q(x), self.num_heads)
        k, v = (split_heads(t, self.num_heads)
                for t in self.kv(self.reduce_tokens(x, hw_shape)).chunk(2, dim=-1))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
