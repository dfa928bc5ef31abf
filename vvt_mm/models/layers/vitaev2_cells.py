"""ViTAEv2 cells (arXiv 2202.10108) with Varied-Size Window Attention.

A stage is one reduction cell (downsampling, multi-scale context) followed by
normal cells. Both cells run a transformer branch and a parallel convolution
branch (PCM) side by side; the convolutions carry the locality and scale
inductive biases that let ViTAE train with less data.

All cells take and return NCHW maps; token-wise parts (LayerNorm, MLP) run on
the channels-last view of the same tensor. The attention branch is a token
mixer from ``ATTENTIONS`` (VSA by default, ``attn_cfg`` for any other), called
on the cell's tokens like every mixer.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from ..attention.builder import build_attention, takes_option
from .padding import pad_to_multiple
from .token_grid import nchw_to_nlc, nlc_to_nchw

# The official attention branch of both cells: Varied-Size Window Attention.
DEFAULT_ATTN_CFG = dict(type='vsa')
# The official token norms: torch's default epsilon in reduction cells, 1e-6 in
# normal cells.
REDUCTION_CELL_NORM_CFG = dict(type='LN', eps=1e-5)
NORMAL_CELL_NORM_CFG = dict(type='LN', eps=1e-6)


def _channels_last(fn: nn.Module, x: Tensor) -> Tensor:
    """Apply a token-wise module (LayerNorm, MLP) to an NCHW map."""
    return fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _mix_map(cell: nn.Module, x: Tensor) -> Tensor:
    """``mixer(norm1(tokens))`` of an NCHW map, back as a map (``attn_out`` if any)."""
    hw_shape = (x.shape[2], x.shape[3])
    tokens = cell.attn(cell.norm1(nchw_to_nlc(x)), hw_shape)
    if cell.attn_out is not None:
        tokens = cell.attn_out(tokens)
    return nlc_to_nchw(tokens, hw_shape)


def parallel_conv_module(channels: Sequence[int], strides: Sequence[int] = (1, 1, 1),
                         groups: int = 1, norm_cfg: dict | None = None) -> nn.Sequential:
    """PCM: three grouped 3x3 convs ``c0 -> c1 -> c2 -> c3``, BN + SiLU between.

    Sequential indices 0, 1, 3, 4, 6 hold the weights, as in the official
    layout. In a reduction cell the strides multiply to its downsampling ratio.
    """
    c0, c1, c2, c3 = channels
    norm_cfg = norm_cfg or dict(type='BN')
    return nn.Sequential(
        nn.Conv2d(c0, c1, 3, strides[0], 1, groups=groups),
        build_norm_layer(norm_cfg, c1)[1],
        nn.SiLU(inplace=True),
        nn.Conv2d(c1, c2, 3, strides[1], 1, groups=groups),
        build_norm_layer(norm_cfg, c2)[1],
        nn.SiLU(inplace=True),
        nn.Conv2d(c2, c3, 3, strides[2], 1, groups=groups),
    )


def pcm_strides(downsample_ratio: int) -> tuple[int, int, int]:
    """Split a power-of-two ratio into three conv strides: 4 -> (2, 2, 1)."""
    if downsample_ratio not in (1, 2, 4, 8):
        raise ValueError(f'downsample ratio must be 1, 2, 4 or 8, got {downsample_ratio}')
    strides, rest = [], downsample_ratio
    for _ in range(3):
        strides.append(2 if rest > 1 else 1)
        rest //= 2
    return tuple(strides)


class LinearMLP(BaseModule):
    """``fc1 -> GELU -> dropout -> fc2 -> dropout`` on channels-last tokens."""

    def __init__(self, in_dims: int, hidden_dims: int, drop: float = 0.,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Linear(in_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, in_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PyramidReductionModule(BaseModule):
    """PRM: parallel strided convs at several dilations, GELU, concatenated.

    Sees the input at several receptive fields at once (the multi-scale
    inductive bias of ViTAE). Paddings are the official
    ``ceil(((k - 1) * d + 1 - s) / 2)``; on inputs whose size is a multiple of
    the stride every branch yields ``size / stride``.

    Args:
        in_channels: input channels.
        embed_dims: channels of each branch; output has
            ``embed_dims * len(dilations)``.
        kernel_size: conv kernel (7 in stage 1, 3 later).
        stride: the cell's downsampling ratio.
        dilations: one branch per dilation.
        init_cfg: mmengine init config.
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int,
                 dilations: Sequence[int], init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.convs = ModuleList([
            nn.Conv2d(in_channels, embed_dims, kernel_size, stride,
                      padding=math.ceil(((kernel_size - 1) * d + 1 - stride) / 2), dilation=d)
            for d in dilations
        ])
        self.act = nn.GELU()
        self.out_channels = embed_dims * len(dilations)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.act(conv(x)) for conv in self.convs], dim=1)


class ReductionCell(BaseModule):
    """Downsample by ``stride``: PRM + VSA branch beside a strided PCM, then an MLP.

    ``out = VSA(LN(PRM(x) [+ CPE])) + PCM(x)``; ``out += MLP(LN(out))``. There is
    no identity shortcut (the width changes). The input is zero-padded at the
    bottom/right to a multiple of ``stride`` so that both branches agree on
    the output size ``ceil(size / stride)`` for any input.

    Args:
        in_channels: input channels.
        embed_dims: PRM branch width (and PCM hidden width unless ``wide_pcm``).
        token_dims: output channels.
        stride: downsampling ratio (4 in stage 1, 2 later).
        kernel_size: PRM kernel.
        dilations: PRM dilations.
        num_heads: VSA heads.
        groups: PCM conv groups.
        wide_pcm: PCM hidden width ``2 * token_dims`` (48M and B variants).
        window_size: VSA window.
        cpe: depthwise conv position encoding added before the attention.
        attn_cfg: token mixer (``dict(type='vsa')``); it is given the PRM width
            and, if it takes them, ``window_size`` and ``out_dims=token_dims``.
            A mixer without ``out_dims`` keeps the PRM width and a linear
            ``attn_out`` maps it to ``token_dims``.
        mlp_ratio: MLP hidden width / ``token_dims`` (1 in the official cells).
        drop_path: stochastic depth on the PCM and MLP branches.
        norm_cfg: token norms (LayerNorm eps 1e-5 in reduction cells).
        pcm_norm_cfg: PCM norms (BN; ``SyncBN`` for multi-GPU downstream).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 token_dims: int,
                 stride: int,
                 kernel_size: int,
                 dilations: Sequence[int],
                 num_heads: int,
                 groups: int = 1,
                 wide_pcm: bool = False,
                 window_size: int = 7,
                 cpe: bool = True,
                 attn_cfg: dict | None = None,
                 mlp_ratio: float = 1.,
                 drop_path: float = 0.,
                 norm_cfg: dict | None = None,
                 pcm_norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or REDUCTION_CELL_NORM_CFG
        self.stride = stride
        self.prm = PyramidReductionModule(in_channels, embed_dims, kernel_size, stride,
                                          dilations)
        prm_dims = self.prm.out_channels
        self.cpe = nn.Conv2d(prm_dims, prm_dims, window_size // 2 * 2 + 1,
                             padding=window_size // 2, groups=prm_dims) if cpe else None
        self.norm1 = build_norm_layer(norm_cfg, prm_dims)[1]
        self.attn = build_attention(attn_cfg or DEFAULT_ATTN_CFG,
                                    optional=dict(window_size=window_size, out_dims=token_dims),
                                    embed_dims=prm_dims, num_heads=num_heads)
        needs_out = prm_dims != token_dims and not takes_option(type(self.attn), 'out_dims')
        self.attn_out = nn.Linear(prm_dims, token_dims) if needs_out else None
        hidden = 2 * token_dims if wide_pcm else embed_dims
        self.pcm = parallel_conv_module((in_channels, hidden, hidden, token_dims),
                                        pcm_strides(stride), groups, pcm_norm_cfg)
        self.norm2 = build_norm_layer(norm_cfg, token_dims)[1]
        self.ffn = LinearMLP(token_dims, int(token_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, token_dims, ceil(H/s), ceil(W/s))``."""
        x = pad_to_multiple(x, self.stride)
        y = self.prm(x)
        if self.cpe is not None:
            y = y + self.cpe(y)
        y = _mix_map(self, y)
        y = y + self.drop_path(self.pcm(x))
        return y + self.drop_path(_channels_last(lambda t: self.ffn(self.norm2(t)), y))


class NormalCell(BaseModule):
    """Same-resolution cell: ``x + VSA(LN(x [+ CPE])) + PCM(x)``, then ``+ MLP(LN(.))``.

    Args:
        embed_dims: channels.
        num_heads: VSA heads.
        mlp_ratio: MLP (and PCM) hidden width / ``embed_dims``.
        groups: PCM conv groups.
        window_size: VSA window.
        cpe: depthwise conv position encoding feeding the attention branch only
            (the shortcut and the PCM see the plain input, as officially).
        attn_cfg: token mixer (``dict(type='vsa')``); ``window_size``,
            ``attn_drop`` and ``proj_drop=drop`` reach it if it takes them.
        drop: dropout in the MLP and after the attention projection.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth of the three residual branches.
        norm_cfg: token norms (LayerNorm eps 1e-6 in normal cells).
        pcm_norm_cfg: PCM norms.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 groups: int = 1,
                 window_size: int = 7,
                 cpe: bool = True,
                 attn_cfg: dict | None = None,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 norm_cfg: dict | None = None,
                 pcm_norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or NORMAL_CELL_NORM_CFG
        hidden = int(embed_dims * mlp_ratio)
        self.cpe = nn.Conv2d(embed_dims, embed_dims, window_size // 2 * 2 + 1,
                             padding=window_size // 2, groups=embed_dims) if cpe else None
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = build_attention(
            attn_cfg or DEFAULT_ATTN_CFG,
            optional=dict(window_size=window_size, attn_drop=attn_drop, proj_drop=drop),
            embed_dims=embed_dims, num_heads=num_heads)
        self.attn_out = None
        self.pcm = parallel_conv_module((embed_dims, hidden, embed_dims, embed_dims),
                                        groups=groups, norm_cfg=pcm_norm_cfg)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = LinearMLP(embed_dims, hidden, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> same shape."""
        y = x if self.cpe is None else x + self.cpe(x)
        y = _mix_map(self, y)
        x = x + self.drop_path(y) + self.drop_path(self.pcm(x))
        return x + self.drop_path(_channels_last(lambda t: self.ffn(self.norm2(t)), x))
