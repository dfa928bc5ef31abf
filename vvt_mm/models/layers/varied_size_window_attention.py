"""Varied-Size Window Attention (VSA), arXiv 2204.08446.

Queries stay on the regular ``ws x ws`` window grid. Each window (and each
head) predicts from its own average-pooled content a scale and an offset that
stretch and move the region its keys and values are sampled from; keys and
values are read there with bilinear ``grid_sample``. With zero predicted scale
and offset the sampled region is the window itself, i.e. plain window attention
(with a Swin-style relative position bias).

Everything is built per forward on the input's device and dtype, so any
input size (padded symmetrically up to a multiple of the window, then cropped
back) and any device work.

Registered as the token mixer ``'vsa'``: called as ``vsa(tokens, hw_shape)``
like every mixer, or on an NCHW map directly (``vsa(map)``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from .padding import padded_size
from .token_grid import nchw_to_nlc, nlc_to_nchw


def symmetric_window_padding(h: int, w: int, window_size: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding up to a multiple of the window.

    The extra row/column of an odd padding goes to the bottom/right, as in the
    official detection code.
    """
    pad_h, pad_w = padded_size(h, window_size) - h, padded_size(w, window_size) - w
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def relative_position_index(window_size: int) -> Tensor:
    """``(ws*ws, ws*ws)`` index into a ``(2ws-1)^2`` bias table (row-major windows)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                        indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return rel[0] * (2 * window_size - 1) + rel[1]


def _unit_linspace(steps: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``torch.linspace(-1, 1, steps)`` (to an ulp; from both ends, so -1 and 1 are
    exact) built from ``arange``: torch.export fixes linspace's ``steps`` to the
    traced value."""
    if steps == 1:
        return torch.full((1, ), -1., device=device, dtype=dtype)
    index = torch.arange(steps, device=device, dtype=dtype)
    step = 2 / (steps - 1)
    return torch.where(index < steps // 2, index * step - 1, 1 - (steps - 1 - index) * step)


def vsa_sampling_grid(offsets: Tensor, scales: Tensor, window_size: int,
                      padded_hw: tuple[int, int]) -> Tensor:
    """Where each window's keys/values are sampled, as a ``grid_sample`` grid.

    Args:
        offsets: ``(N, 2, nh, nw)`` predicted offsets per window, channel 0 along
            x (width), 1 along y. They are divided here by the window count of
            their axis (as officially), so an offset of 1 moves a window by
            ``(size - 1) / (2 * count)`` pixels: about half a window.
        scales: ``(N, 2, nh, nw)`` predicted scales per window; the window's
            extent is multiplied by ``1 + scale`` (0 keeps the window).
        window_size: ``ws``.
        padded_hw: the padded map size ``(nh * ws, nw * ws)``.

    Returns:
        ``(N, nh*ws, nw*ws, 2)`` normalised ``(x, y)`` coordinates (float32 or
        wider) for
        ``grid_sample(..., align_corners=True)``: ``-1``/``1`` are the centres
        of the first/last pixel of the padded map.
    """
    hp, wp = padded_hw
    nh, nw = hp // window_size, wp // window_size
    # At least float32: in half precision the grid of a 300-pixel map would be
    # off by a sizeable fraction of a pixel (official grids are float32 too).
    device, dtype = offsets.device, torch.promote_types(offsets.dtype, torch.float32)
    offsets, scales = offsets.to(dtype), scales.to(dtype)
    # Pixel centres of the padded map and each pixel's position relative to its
    # window centre, both in normalised units.
    ref_x = _unit_linspace(wp, device, dtype)
    ref_y = _unit_linspace(hp, device, dtype)
    rel = torch.arange(window_size, device=device, dtype=dtype) - (window_size - 1) / 2
    # Window of each pixel row/column and the pixel's place in it: per-window
    # values are gathered per pixel (repeat_interleave does not export to ONNX
    # for symbolic nh, nw, and torch.export cannot merge (nh, ws) into hp).
    rows = torch.arange(hp, device=device) // window_size
    cols = torch.arange(wp, device=device) // window_size
    rel_x = (rel * (2 / max(wp - 1, 1)))[torch.arange(wp, device=device) - cols * window_size]
    rel_y = (rel * (2 / max(hp - 1, 1)))[torch.arange(hp, device=device) - rows * window_size]

    def per_pixel(t: Tensor) -> Tensor:  # (N, nh, nw) -> (N, hp, wp)
        return t.index_select(1, rows).index_select(2, cols)

    grid_x = ref_x + rel_x * per_pixel(scales[:, 0]) + per_pixel(offsets[:, 0] / nw)
    grid_y = (ref_y[:, None] + rel_y[:, None] * per_pixel(scales[:, 1])
              + per_pixel(offsets[:, 1] / nh))
    return torch.stack([grid_x, grid_y], dim=-1)


def _to_windows(t: Tensor, batch: int, num_heads: int, window_size: int) -> Tensor:
    """``(B*heads, d, nh*ws, nw*ws)`` -> ``(B, nh*nw, heads, ws*ws, d)``.

    Windows are cut by ``unfold`` (stride = kernel: a copy): a reshape that
    splits ``hp`` into ``(nh, ws)`` does not export for symbolic sizes, whose
    divisibility torch.export cannot always prove.
    """
    d = t.shape[1]
    cols = F.unfold(t, window_size, stride=window_size)  # (B*heads, d*ws*ws, nh*nw)
    cols = cols.unflatten(0, (batch, num_heads)).unflatten(2, (d, window_size ** 2))
    return cols.permute(0, 4, 1, 3, 2)


def _from_windows(t: Tensor, hp: int, wp: int, window_size: int) -> Tensor:
    """Inverse of :func:`_to_windows`, heads merged: ``(B, heads*d, hp, wp)``.

    ``fold`` with stride = kernel places the windows without overlap (a copy).
    """
    cols = t.permute(0, 2, 4, 3, 1).flatten(1, 3)  # (B, heads*d*ws*ws, nh*nw)
    return F.fold(cols, (hp, wp), window_size, stride=window_size)


def _crop(t: Tensor, top: int, left: int, h: int, w: int) -> Tensor:
    """``t[:, :, top:top + h, left:left + w]`` by gathering rows and columns.

    For symbolic sizes torch.export cannot prove the slice bounds inside the
    map, and would specialise the graph to the traced padding.
    """
    rows = torch.arange(h, device=t.device) + top
    cols = torch.arange(w, device=t.device) + left
    return t.index_select(2, rows).index_select(3, cols)


@ATTENTIONS.register_module(name=['vsa', 'VariedSizeWindowAttention'])
class VariedSizeWindowAttention(BaseModule):
    """Window attention whose key/value windows are learned per window and head.

    Works on NCHW maps (:meth:`forward_map`); as a token mixer, on tokens laid
    out on ``hw_shape``. q, k and v come from a 1x1 conv of the *unpadded* map
    and are zero-padded afterwards (so padded tokens are exact zeros, not the
    conv bias, and are not masked: both as in the official code).

    Args:
        embed_dims: input channels.
        out_dims: output channels (``embed_dims`` if ``None``); reduction cells
            map the pyramid features to a different width here.
        num_heads: attention heads; each predicts its own window.
        window_size: ``ws`` of the query windows (7 in ViTAEv2-VSA).
        qkv_bias: bias of the q/k/v projection.
        qk_scale: overrides the logit scale. The official default is
            ``(embed_dims // num_heads) ** -0.5`` -- the *input* width per head,
            which differs from the q/k head width in reduction cells; kept so
            that official weights reproduce their logits.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 out_dims: int | None = None,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 qk_scale: float | None = None,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_dims = embed_dims
        out_dims = out_dims or in_dims
        if out_dims % num_heads:
            raise ValueError(f'out_dims {out_dims} is not divisible by num_heads {num_heads}')
        if window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        self.in_dims, self.out_dims = in_dims, out_dims
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (in_dims // num_heads) ** -0.5
        # Window-level predictors: pool each window, then a 1x1 conv to one
        # (x, y) pair per head. Indices 0/1/2 match the official layout.
        self.sampling_offsets = nn.Sequential(
            nn.AvgPool2d(window_size, stride=window_size), nn.LeakyReLU(),
            nn.Conv2d(in_dims, num_heads * 2, 1))
        self.sampling_scales = nn.Sequential(
            nn.AvgPool2d(window_size, stride=window_size), nn.LeakyReLU(),
            nn.Conv2d(in_dims, num_heads * 2, 1))
        self.qkv = nn.Conv2d(in_dims, out_dims * 3, 1, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(out_dims, out_dims, 1)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Derived from window_size alone, so not saved with the weights.
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)
        self.reset_sampling_parameters()
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def reset_sampling_parameters(self) -> None:
        """Zero scale and offset predictors: training starts from window attention."""
        constant_init(self.sampling_offsets[-1], 0., bias=0.)
        constant_init(self.sampling_scales[-1], 0., bias=0.)

    def init_weights(self) -> None:
        super().init_weights()
        self.reset_sampling_parameters()

    def relative_position_bias(self) -> Tensor:
        """``(heads, ws*ws, ws*ws)`` bias added to the logits."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, hw_shape: tuple[int, int] | None = None) -> Tensor:
        """Tokens ``(B, H*W, in_dims)`` on ``hw_shape`` -> ``(B, H*W, out_dims)``;
        without ``hw_shape``, an NCHW map -> NCHW map (:meth:`forward_map`)."""
        if hw_shape is None:
            return self.forward_map(x)
        return nchw_to_nlc(self.forward_map(nlc_to_nchw(x, hw_shape)))

    def forward_map(self, x: Tensor) -> Tensor:
        """``(B, in_dims, H, W)`` -> ``(B, out_dims, H, W)`` for any ``H, W``."""
        if torch.compiler.is_exporting():
            # Cells pass a channels-last view (LayerNorm on permuted maps); for
            # symbolic H, W torch.export cannot order its strides in the
            # elementwise ops below (guards such as ``2 % (4 * nw) != 0``).
            x = x.contiguous()
        b, _, h, w = x.shape
        ws, heads = self.window_size, self.num_heads
        head_dims = self.out_dims // heads
        pads = symmetric_window_padding(h, w, ws)
        left, _, top, _ = pads
        hp, wp = h + pads[2] + pads[3], w + pads[0] + pads[1]

        x_pad = F.pad(x, pads)
        # (B, heads*2, nh, nw) -> (B*heads, 2, nh, nw), sizes taken from the tensor.
        offsets = self.sampling_offsets(x_pad).unflatten(1, (heads, 2)).flatten(0, 1)
        scales = self.sampling_scales(x_pad).unflatten(1, (heads, 2)).flatten(0, 1)
        grid = vsa_sampling_grid(offsets, scales, ws, (hp, wp))

        qkv = F.pad(self.qkv(x), pads).reshape(b, 3, heads * head_dims, hp, wp)
        q, k, v = (t.reshape(b * heads, head_dims, hp, wp) for t in qkv.unbind(1))
        k, v = (F.grid_sample(t.to(grid.dtype), grid, mode='bilinear', padding_mode='zeros',
                              align_corners=True).to(q.dtype) for t in (k, v))
        q, k, v = (_to_windows(t, b, heads, ws) for t in (q, k, v))

        logits = (q @ k.transpose(-2, -1)) * self.scale
        logits = logits + self.relative_position_bias().to(logits.dtype)
        attn = self.attn_drop(logits.softmax(dim=-1))
        out = _crop(_from_windows(attn @ v, hp, wp, ws), top, left, h, w)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f'in_dims={self.in_dims}, out_dims={self.out_dims}, '
                f'num_heads={self.num_heads}, window_size={self.window_size}')
