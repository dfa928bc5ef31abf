"""Non-overlapping patch embedding (ViT / PVTv1 "patchify")."""
from __future__ import annotations

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from .padding import pad_to_multiple
from .token_grid import nchw_to_nlc


class StridedPatchEmbed(BaseModule):
    """Conv with ``kernel == stride == patch_size``, then an optional norm.

    Inputs whose sides are not multiples of ``patch_size`` are zero-padded at
    the bottom/right (mmseg's ``padding='corner'``), so the grid is
    ``ceil(H / p) x ceil(W / p)`` and no pixel is dropped; the official ViT and
    PVTv1 code instead require (ViT) or silently crop to (PVT) multiples.

    Args:
        in_channels: input channels.
        embed_dims: output channels.
        patch_size: kernel and stride of the projection.
        norm_cfg: norm on the tokens (PVT: LayerNorm eps 1e-5; ViT: none).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 patch_size: int,
                 norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1] if norm_cfg else None

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """NCHW in; tokens ``(B, h*w, C)`` and their grid ``(h, w)`` out."""
        x = self.proj(pad_to_multiple(x, self.patch_size))
        hw_shape = (x.shape[2], x.shape[3])
        x = nchw_to_nlc(x)
        return (self.norm(x) if self.norm is not None else x), hw_shape
