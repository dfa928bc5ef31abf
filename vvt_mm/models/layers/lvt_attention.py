"""LVT's token mixers (Yang et al., "Lite Vision Transformer", CVPR 2022).

* Convolutional Self-Attention (CSA, stage 1): attention *within* each 3x3
  neighbourhood, like a convolution whose kernel is predicted per location.
* Recursive Atrous Self-Attention (RASA, stages 2-4): spatial-reduction softmax
  attention whose queries see multi-scale context through one depthwise 3x3
  kernel shared across dilations 1/3/5, applied recursively.

Both are token mixers (registered in ``ATTENTIONS`` as ``'csa'`` and
``'rasa'``): they take ``(B, N, C)`` tokens laid out row-major on ``hw_shape``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from ..attention.heads import check_heads, merge_heads, split_heads
from .kv_reduction import KVReductionMixin
from .padding import pad_to_multiple
from .token_grid import nchw_to_nlc, nlc_to_nchw


def _avg_pool_ceil(x: Tensor, stride: int) -> Tensor:
    """``avg_pool2d(x, stride, ceil_mode=True)``: windows cut by the border average
    the pixels they cover.

    Written as zero-padded sums over in-map counts because torch.export cannot
    prove ceil mode's output-size check for symbolic sizes. For stride 2 the
    counts are powers of two, so the result is bit for bit that of ceil mode.
    """
    ones = x.new_ones(1, 1, x.shape[2], x.shape[3])
    return (F.avg_pool2d(pad_to_multiple(x, stride), stride)
            / F.avg_pool2d(pad_to_multiple(ones, stride), stride))


@ATTENTIONS.register_module(name=['csa', 'ConvolutionalSelfAttention'])
class ConvolutionalSelfAttention(BaseModule):
    """CSA: per-window attention among the 9 positions of a 3x3 neighbourhood.

    For every window centre on a stride-2 grid, an average-pooled (2x2) token
    predicts, per head, a 9x9 matrix: how much each of the 9 output positions
    of the window takes from each of the 9 input positions. Values are the
    unfolded 3x3 neighbourhood, each position transformed by its own
    ``C x C`` matrix (``value_weight[p]``). Windows overlap (3x3 at stride 2),
    so outputs are summed back onto the map by ``fold`` (overlap-add), then
    projected. ``pool``/``unfold``/``fold`` are all ``ceil(H/2)``-sized, so any
    ``H x W`` works without padding.

    Args:
        embed_dims: token channels.
        num_heads: heads; each head has its own 9x9 attention.
        kernel_size: neighbourhood (3).
        stride: window stride (2).
        attn_drop: dropout on the attention weights.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 kernel_size: int = 3,
                 stride: int = 2,
                 attn_drop: float = 0.,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.scale = (embed_dims // num_heads) ** -0.5
        positions = kernel_size * kernel_size
        self.attn_logits = nn.Linear(embed_dims, positions * positions * num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        # value_weight[p] maps the input channels of window position p to its
        # output channels (the official grouped 1x1 conv, one group per position).
        self.value_weight = nn.Parameter(torch.empty(positions, embed_dims, embed_dims))
        nn.init.normal_(self.value_weight, 0, math.sqrt(2.0 / (positions * embed_dims)))
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        bsz, _, channels = x.shape
        k, heads = self.kernel_size, self.num_heads
        positions = k * k
        grid = nlc_to_nchw(x, hw_shape)
        pooled = _avg_pool_ceil(grid, self.stride)
        num_windows = pooled.shape[2] * pooled.shape[3]
        attn = self.attn_logits(nchw_to_nlc(pooled))
        attn = attn.reshape(bsz, num_windows, heads, positions, positions).transpose(1, 2)
        attn = self.attn_drop((attn * self.scale).softmax(dim=-1))  # (B, h, n, out p, in p)

        cols = F.unfold(grid, k, padding=k // 2, stride=self.stride)
        cols = cols.reshape(bsz, channels, positions, num_windows)
        values = torch.einsum('bcpn,poc->bnpo', cols, self.value_weight)
        values = values.reshape(bsz, num_windows, positions, heads, channels // heads)
        out = attn @ values.permute(0, 3, 1, 2, 4)  # (B, heads, n, p, d)
        # fold wants (B, C * k * k, n) with channel-major (c * k*k + p) order.
        out = out.permute(0, 1, 4, 3, 2).reshape(bsz, channels * positions, num_windows)
        out = F.fold(out, hw_shape, k, padding=k // 2, stride=self.stride)
        return self.proj(nchw_to_nlc(out))


class AtrousDepthwiseConv(BaseModule):
    """``sum_d act(dwconv_d(x))``: one 3x3 depthwise kernel at several dilations.

    Sharing the kernel keeps the parameters of a single 3x3 depthwise conv
    while the receptive field grows with the largest dilation.
    """

    def __init__(self,
                 channels: int,
                 dilations: Sequence[int] = (1, 3, 5),
                 bias: bool = False,
                 act_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.dilations = tuple(dilations)
        self.weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        nn.init.kaiming_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.act = build_activation_layer(act_cfg or dict(type='SiLU'))

    def forward(self, x: Tensor) -> Tensor:
        return sum(self.act(F.conv2d(x, self.weight, self.bias, padding=d, dilation=d,
                                     groups=x.shape[1])) for d in self.dilations)


@ATTENTIONS.register_module(name=['rasa', 'RecursiveAtrousSelfAttention'])
class RecursiveAtrousSelfAttention(KVReductionMixin, BaseModule):
    """RASA: ``SiLU(A(SiLU(A(x)) + x))`` for two recursions (``A`` below).

    ``A``: q = atrous depthwise conv of ``Linear(x)``; k, v from an
    ``sr x sr``, stride-``sr`` conv of the map plus LayerNorm (PVT-style
    reduction); softmax attention; output projection. Maps whose sides are
    not multiples of ``sr_ratio`` are zero-padded at the bottom/right before
    the reduction (the official conv drops the remainder and fails on maps
    smaller than ``sr_ratio``); on multiples the two agree exactly.

    Args:
        embed_dims: token channels.
        num_heads: attention heads.
        sr_ratio: key/value spatial reduction (LVT: 4, 2, 1 in stages 2-4).
        atrous_rates: dilations of the shared query conv (``None``: plain q).
        recursions: how many times attention is applied (2 in LVT).
        qkv_bias: bias in q, kv and the atrous conv (LVT: none).
        act_cfg: activation of the atrous branches and between recursions.
        attn_drop: dropout on the attention weights.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 atrous_rates: Sequence[int] | None = (1, 3, 5),
                 recursions: int = 2,
                 qkv_bias: bool = False,
                 act_cfg: dict | None = None,
                 attn_drop: float = 0.,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        if recursions < 1:
            raise ValueError(f'recursions must be >= 1, got {recursions}')
        act_cfg = act_cfg or dict(type='SiLU')
        self.num_heads = num_heads
        self.recursions = recursions
        self.attn_drop = attn_drop
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.init_kv_reduction(embed_dims, sr_ratio)
        self.ds = AtrousDepthwiseConv(embed_dims, atrous_rates, bias=qkv_bias,
                                      act_cfg=act_cfg) if atrous_rates else None
        self.act = build_activation_layer(act_cfg)

    def attend(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """One pass of atrous-query, reduced-key/value softmax attention."""
        q = self.q(x)
        if self.ds is not None:
            q = nchw_to_nlc(self.ds(nlc_to_nchw(q, hw_shape)))
        k, v = self.kv(self.reduce_kv(x, hw_shape)[0]).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj(merge_heads(out))

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        out = self.attend(x, hw_shape)
        if self.recursions == 1:
            return out
        out = self.act(out)
        for _ in range(self.recursions - 1):
            x = out + x
            out = self.act(self.attend(x, hw_shape))
        return out
