"""Feed-forward network with a 3x3 depthwise conv between the two linears."""
from __future__ import annotations

import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule
from torch import Tensor


class ConvFFN(BaseModule):
    """``fc1 -> depthwise 3x3 conv (with bias) -> act -> fc2`` on a token grid.

    The depthwise conv adds the local positional cue that lets VVT and PVTv2
    drop absolute position embeddings (and so accept any input size).

    Args:
        embed_dims: input and output channels.
        hidden_dims: channels between fc1 and fc2.
        act_cfg: activation after the conv (GELU).
        drop: dropout after the activation and after fc2.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act_cfg: dict | None = None,
                 drop: float = 0.,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims)
        self.act = build_activation_layer(act_cfg or dict(type='GELU'))
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        x = self.fc1(x)
        bsz, _, channels = x.shape
        # Tokens are already channels-last: view them as an NCHW tensor with
        # channels-last strides (no copy); the conv then runs its channels-last
        # kernel and its output reads back as tokens without a copy either
        # (about 2x faster on CPU than transposing to contiguous NCHW).
        x = x.reshape(bsz, *hw_shape, channels).permute(0, 3, 1, 2)
        x = self.dwconv(x).permute(0, 2, 3, 1).reshape(bsz, -1, channels)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))
