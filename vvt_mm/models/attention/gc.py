"""GCNet global context block as a token mixer (the "GCNet" row of VVT Table VII)."""
from __future__ import annotations

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from .heads import check_heads


@ATTENTIONS.register_module(name=['gc', 'GlobalContextAttention'])
class GlobalContextAttention(BaseModule):
    """One query-independent context vector, added to every token.

    GCNet's three steps on ``(B, N, C)`` tokens: attention pooling
    (``softmax_j(w . x_j)`` weights, one context vector per image), a
    bottleneck transform ``C -> C*ratio -> LayerNorm -> ReLU -> C``, and
    fusion by addition. The block's residual (``x + attn(norm1(x))``) supplies
    the identity term of that addition, so the mixer returns only the
    transformed context, broadcast over the tokens. The 1x1 convolutions of
    the NCHW original are ``nn.Linear`` here (same parameters).

    Args:
        embed_dims: channels of the tokens.
        num_heads: accepted for the common interface; the context block has
            a single pooling head, as in GCNet.
        ratio: bottleneck width / ``embed_dims``; 1/16 is GCNet's default
            (``r16``), 1/4 its heavier variant.
        norm_cfg: norm inside the bottleneck (GCNet: LayerNorm).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int = 1,
                 ratio: float = 1. / 16,
                 norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        hidden = int(embed_dims * ratio)
        if hidden < 2:
            # LayerNorm over a single channel outputs its bias whatever the input.
            raise ValueError(f'ratio={ratio} leaves a bottleneck of {hidden} channel(s) for '
                             f'embed_dims={embed_dims}; it needs at least 2')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.ratio = ratio
        self.conv_mask = nn.Linear(embed_dims, 1)
        self.channel_add = nn.Sequential(
            nn.Linear(embed_dims, hidden),
            build_norm_layer(norm_cfg or dict(type='LN', eps=1e-5), hidden)[1],
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dims))

    # Positions play no part, so class tokens may join the grid tokens.
    takes_extra_tokens = True

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Return the context term ``(B, N, C)``; ``hw_shape`` is unused."""
        weights = self.conv_mask(x).softmax(dim=1)  # (B, N, 1)
        context = (weights.transpose(1, 2) @ x)  # (B, 1, C)
        return self.channel_add(context).expand_as(x)
