"""Feed-forward network with a 3x3 depthwise conv between the two linears."""
from __future__ import annotations

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule
from torch import Tensor

from .tracing import is_exporting


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

    # Without autograd, maps whose hidden activation exceeds this many elements
    # (256 MiB of fp32) run in stripes of rows holding about a quarter of it:
    # VVT-S's stage-1 hidden map at 1024x2048 is 131k tokens x 768 channels =
    # 384 MiB, alive twice (fc1 and conv outputs), which alone made its
    # inference peak.
    stripe_elements: int = 1 << 26

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        big = x.shape[1] * self.fc1.out_features > self.stripe_elements
        if (big and not torch.is_grad_enabled() and not torch.compiler.is_compiling() and
                not is_exporting()):
            return self._forward_in_stripes(x, hw_shape)
        return self._forward(x, hw_shape)

    def _forward_in_stripes(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """The same function, a stripe of rows at a time (inference only).

        Each stripe takes one halo row above and below for the 3x3 conv, so
        every output equals the whole-map computation up to float rounding;
        the peak holds one stripe's hidden activations instead of the whole
        map's.
        """
        bsz, _, channels = x.shape
        height, width = hw_shape
        rows = max(1, self.stripe_elements // (4 * width * self.fc1.out_features))
        grid = x.reshape(bsz, height, width, channels)
        out = x.new_empty(bsz, height, width, self.fc2.out_features)
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            lo, hi = max(top - 1, 0), min(bottom + 1, height)
            # The conv's own zero padding is right at the map's edges; a halo
            # row's output (wrong: its neighbour is missing) is dropped.
            hidden = self.dwconv(self.fc1(grid[:, lo:hi]).permute(0, 3, 1, 2))
            hidden = hidden.permute(0, 2, 3, 1)[:, top - lo:top - lo + bottom - top]
            out[:, top:bottom] = self.fc2(self.drop(self.act(hidden)))
        return out.reshape(bsz, height * width, -1)

    def _forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
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
