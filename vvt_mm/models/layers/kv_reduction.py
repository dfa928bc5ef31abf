"""Key/value spatial reduction (PVT's SRA), shared by every mixer that offers it.

Keys and values come from an ``r x r``, stride-``r`` convolution of the token
map followed by a LayerNorm, so attention over ``N`` queries sees only
``N / r^2`` keys. Maps whose sides are not multiples of ``r`` are zero-padded
at the bottom/right first, so every token reaches some key (PVT's convolution
drops the last rows/columns, and fails on maps smaller than ``r``); on
multiples the two agree exactly.

A mixin rather than a submodule: the convolution and norm stay the mixer's own
``sr`` and ``norm`` attributes, the key names of the official PVTv2, VVT and
LVT checkpoints.
"""
from __future__ import annotations

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from torch import Tensor

from .padding import pad_to_multiple
from .token_grid import nchw_to_nlc, nlc_to_nchw

# PVTv2, VVT and LVT all normalise the reduced tokens with LayerNorm eps 1e-5.
KV_REDUCTION_NORM_CFG = dict(type='LN', eps=1e-5)


class KVReductionMixin:
    """Gives a token mixer ``sr_ratio``, ``sr``/``norm`` and :meth:`reduce_kv`.

    Call :meth:`init_kv_reduction` in ``__init__`` (after ``nn.Module``'s);
    with ``sr_ratio == 1`` no layers are made and :meth:`reduce_kv` returns
    its input.
    """

    sr_ratio: int = 1

    def init_kv_reduction(self, embed_dims: int, sr_ratio: int,
                          norm_cfg: dict | None = None) -> None:
        """Build the ``sr`` convolution and ``norm`` for ``sr_ratio > 1``."""
        if int(sr_ratio) != sr_ratio or sr_ratio < 1:
            raise ValueError(f'sr_ratio must be an integer >= 1, got {sr_ratio}')
        self.sr_ratio = int(sr_ratio)
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, self.sr_ratio, stride=self.sr_ratio)
            self.norm = build_norm_layer(norm_cfg or KV_REDUCTION_NORM_CFG, embed_dims)[1]

    def reduce_kv(self, x: Tensor, hw_shape: tuple[int, int]
                  ) -> tuple[Tensor, tuple[int, int]]:
        """Tokens that keys and values are computed from, ``(B, N', C)``, and their grid."""
        if self.sr_ratio == 1:
            return x, tuple(hw_shape)
        grid = self.sr(pad_to_multiple(nlc_to_nchw(x, hw_shape), self.sr_ratio))
        return self.norm(nchw_to_nlc(grid)), (grid.shape[2], grid.shape[3])
