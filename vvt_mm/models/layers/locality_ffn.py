"""LocalViT's locality feed-forward network (Li et al., arXiv 2104.05707).

The transformer MLP becomes an inverted residual block on the token map: the
3x3 depthwise conv between the two point-wise layers is what gives each token
its neighbours (the paper's "locality"); SE or ECA optionally re-weights the
hidden channels.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands a contiguous gradient to the layers below.

    Blocks read this FFN's output as tokens (``flatten(2).transpose(1, 2)``), so
    the gradient arriving here is a transposed view. For a batch of one its
    strides are ``(C, 1, W*C, C)``, and torch 2.x's CPU eval-mode BatchNorm
    backward returns a wrong input gradient for them (float32 and float64;
    batches of 2+ are fine). A contiguous copy of the gradient avoids it.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


class HiddenSE(BaseModule):
    """Squeeze-and-excitation with linear layers and an h-sigmoid gate.

    LocalViT squeezes ``channels`` to ``channels // reduction`` (so its
    ``reduction`` is relative to the *hidden* width of the FFN: LocalViT-T uses
    ``reduction=192`` on 768 hidden channels, i.e. a 4-wide bottleneck).
    """

    def __init__(self, channels: int, reduction: int, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        squeezed = channels // reduction
        if squeezed < 1:
            raise ValueError(f'SE reduction {reduction} leaves no channel of {channels}; '
                             f'use a reduction <= {channels}')
        self.fc1 = nn.Linear(channels, squeezed)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(squeezed, channels)
        self.gate = nn.Hardsigmoid()  # ReLU6(x + 3) / 6, the official h_sigmoid

    def forward(self, x: Tensor) -> Tensor:
        weights = self.gate(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))
        return x * weights[:, :, None, None]


class HiddenECA(BaseModule):
    """Efficient channel attention: a 1D conv across pooled channels, no bias.

    The kernel size follows ECA-Net: the odd number nearest ``(log2(C) + 1) / 2``
    (rounded up to odd), as in the official LocalViT ``ECALayer``.
    """

    def __init__(self, channels: int, sigmoid: bool = True,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        t = int(abs((math.log(channels, 2) + 1) / 2))
        kernel = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel, padding=kernel // 2, bias=False)
        self.gate = nn.Sigmoid() if sigmoid else nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3))[:, None, :]  # (B, 1, C): channels as a sequence
        weights = self.gate(self.conv(pooled))[:, 0]
        return x * weights[:, :, None, None]


class LocalityFFN(BaseModule):
    """``x + BN(PW(attn(DW(PW(x)))))`` on an NCHW map (residual inside).

    1x1 conv (no bias) -> BN -> act -> 3x3 depthwise (no bias) -> BN -> act ->
    optional SE/ECA on the hidden channels -> 1x1 conv (no bias) -> BN.

    Args:
        embed_dims: input = output channels.
        mlp_ratio: hidden channels / ``embed_dims``.
        channel_attn: ``'se'``, ``'eca'``, ``'eca_hsigmoid'`` or ``None``.
        se_reduction: SE squeezes ``hidden // se_reduction`` channels.
        act_cfg: activation after both BNs (h-swish in LocalViT; ``ReLU6``
            for the paper's ``act1`` ablation).
        norm_cfg: the three norms (BN; use SyncBN for dense prediction).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 mlp_ratio: float = 4.,
                 channel_attn: str | None = 'se',
                 se_reduction: int = 4,
                 act_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        act_cfg = act_cfg or dict(type='HSwish')
        norm_cfg = norm_cfg or dict(type='BN')
        hidden = int(embed_dims * mlp_ratio)
        self.hidden_dims = hidden
        self.expand = ConvModule(embed_dims, hidden, 1, bias=False, norm_cfg=norm_cfg,
                                 act_cfg=act_cfg)
        self.dwconv = ConvModule(hidden, hidden, 3, padding=1, groups=hidden, bias=False,
                                 norm_cfg=norm_cfg, act_cfg=act_cfg)
        if channel_attn is None:
            self.channel_attn = nn.Identity()
        elif channel_attn == 'se':
            self.channel_attn = HiddenSE(hidden, se_reduction)
        elif channel_attn in ('eca', 'eca_hsigmoid'):
            self.channel_attn = HiddenECA(hidden, sigmoid=channel_attn == 'eca')
        else:
            raise ValueError(f"channel_attn must be 'se', 'eca', 'eca_hsigmoid' or None, "
                             f'got {channel_attn!r}')
        self.project = ConvModule(hidden, embed_dims, 1, bias=False, norm_cfg=norm_cfg,
                                  act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:
        """NCHW in, NCHW out."""
        if torch.compiler.is_exporting():
            # Blocks pass a channels-last view of their tokens; for symbolic H, W
            # BatchNorm's stride propagation on it adds a guard torch.export cannot
            # decide (``1 % (C * W) != 0``). Plain NCHW strides avoid it.
            x = x.contiguous()
        out = x + self.project(self.channel_attn(self.dwconv(self.expand(x))))
        return _ContiguousGrad.apply(out)
