"""Vicinity Attention Block token mixer: Feature Reduction Attention + FPC."""
from __future__ import annotations

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.ops.vicinity_reference import abs_clamp
from vvt_mm.registry import ATTENTIONS

from ..layers.padding import pad_to_multiple
from .vicinity_dispatch import IMPLS, vicinity_attention


@ATTENTIONS.register_module(name=['vicinity', 'VicinityAttention'])
class VicinityAttention(BaseModule):
    """Vicinity attention with feature reduction and a feature preserving gate.

    q, k and v are projected to ``embed_dims / feature_reduction`` channels
    (FRA), mixed by :func:`vicinity_attention`, projected back, and re-scaled by
    ``1 + sigmoid(FC(ReLU(FC(mean_tokens(x)))))`` (FPC), which restores the
    channel statistics the reduction discarded.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads (split the reduced channels).
        feature_reduction: FR ratio of the paper; 2 for every VVT variant.
        sr_ratio: keys and values come from an ``r x r`` strided conv of the
            input (VVT_sr, paper Fig. 8); 1 disables it.
        clamp: apply the official ``abs_clamp`` points (keeps converted
            official weights exact and fp16 finite).
        impl: attention core implementation, one of ``auto``, ``torch``,
            ``reference``, ``triton``.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feature_reduction: int = 2,
                 sr_ratio: int = 1,
                 clamp: bool = True,
                 impl: str = 'auto',
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        inner_dims = embed_dims // feature_reduction
        if embed_dims % feature_reduction or inner_dims % num_heads:
            raise ValueError(
                f'embed_dims={embed_dims} / feature_reduction={feature_reduction} must '
                f'be an integer divisible by num_heads={num_heads}')
        if impl not in IMPLS:
            raise ValueError(f'unknown impl {impl!r}; choose one of {IMPLS}')
        if sr_ratio < 1:
            raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.inner_dims = inner_dims
        self.sr_ratio = sr_ratio
        self.clamp = clamp
        self.impl = impl

        self.q_proj = nn.Linear(embed_dims, inner_dims)
        self.k_proj = nn.Linear(embed_dims, inner_dims)
        self.v_proj = nn.Linear(embed_dims, inner_dims)
        self.out_proj = nn.Linear(inner_dims, embed_dims)
        self.fpc_gate = nn.Sequential(
            nn.Linear(embed_dims, embed_dims, bias=False), nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims, bias=False), nn.Sigmoid())
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, stride=sr_ratio)
            self.norm = build_norm_layer(dict(type='LN', eps=1e-5), embed_dims)[1]

    def _reduced_tokens(self, x: Tensor, hw_shape: tuple[int, int]) -> tuple[Tensor, tuple]:
        """Tokens for k and v: ``x`` itself, or its strided-conv reduction.

        Inputs whose sides are not multiples of ``sr_ratio`` are zero-padded at
        the bottom/right so every token reaches some key (none is dropped).
        """
        if self.sr_ratio == 1:
            return x, hw_shape
        bsz, _, channels = x.shape
        h, w = hw_shape
        grid = x.transpose(1, 2).reshape(bsz, channels, h, w)
        grid = self.sr(pad_to_multiple(grid, self.sr_ratio))
        reduced_hw = (grid.shape[2], grid.shape[3])
        return self.norm(grid.flatten(2).transpose(1, 2)), reduced_hw

    def attention_core(self, q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                       kv_hw: tuple[int, int]) -> Tensor:
        """Mix ``(B, heads, N, d)`` heads; the one step variants override."""
        return vicinity_attention(q, k, v, q_hw, kv_hw, clamp=self.clamp, impl=self.impl)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        bsz, num_tokens, _ = x.shape
        heads, head_dims = self.num_heads, self.inner_dims // self.num_heads
        gate = self.fpc_gate(x.mean(dim=1)).unsqueeze(1)
        kv_tokens, kv_hw = self._reduced_tokens(x, hw_shape)

        q = self.q_proj(x).view(bsz, num_tokens, heads, head_dims).transpose(1, 2)
        k = self.k_proj(kv_tokens).view(bsz, -1, heads, head_dims).transpose(1, 2)
        v = self.v_proj(kv_tokens).view(bsz, -1, heads, head_dims).transpose(1, 2)
        out = self.attention_core(q, k, v, tuple(hw_shape), kv_hw)
        out = self.out_proj(out.transpose(1, 2).reshape(bsz, num_tokens, self.inner_dims))
        if self.clamp:
            out = abs_clamp(out)
        out = out + out * gate
        if self.clamp:
            out = abs_clamp(out)
        return out
