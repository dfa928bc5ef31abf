"""Overlapping patch embedding (PVTv2 / VVT style)."""
from __future__ import annotations

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from .token_grid import nchw_to_nlc


class OverlapPatchEmbed(BaseModule):
    """Strided conv with ``kernel > stride`` so patches overlap, then a norm.

    Args:
        in_channels: input channels.
        embed_dims: output channels.
        kernel_size: conv kernel (7 in stage 1, 3 later in VVT).
        stride: conv stride (4 in stage 1, 2 later).
        norm_cfg: norm after the conv; VVT uses LayerNorm with eps 1e-5 here.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 kernel_size: int = 7,
                 stride: int = 4,
                 norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or dict(type='LN', eps=1e-5)
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size, stride=stride,
                              padding=kernel_size // 2)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Return tokens ``(B, H*W, C)`` and their grid ``(H, W)``."""
        x = self.proj(x)
        hw_shape = (x.shape[2], x.shape[3])
        return self.norm(nchw_to_nlc(x)), hw_shape
