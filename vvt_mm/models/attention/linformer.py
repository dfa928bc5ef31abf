"""Linformer attention for images of any size (the "Linformer" row of VVT Table VII)."""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from ..layers.adaptive_pool import adaptive_avg_pool2d
from ..layers.token_grid import nlc_to_nchw
from .heads import check_heads, merge_heads, split_heads


@ATTENTIONS.register_module(name=['linformer', 'LinformerAttention'])
class LinformerAttention(BaseModule):
    """Softmax attention over keys/values projected along the token axis.

    Linformer learns ``E, F`` of shape ``k x N`` and attends to ``E K`` and
    ``F V`` (``k`` tokens instead of ``N``), ``O(N k)``. A learned ``k x N``
    matrix only exists for one ``N``, while a backbone sees a different token
    count at every input size. Our choice: the ``H x W`` token grid of keys
    and values is first area-resampled to a fixed ``G x G`` grid by adaptive
    average pooling (itself a linear map along the token axis, defined for
    any ``H, W``), then projected by learned ``E, F`` of shape
    ``k x G^2``. The effective projection ``E . Pool(H, W)`` is ``k x N`` for
    every input and is exactly Linformer's ``E`` when ``H = W = G``. Unlike
    interpolating a ``k x N_ref`` matrix, the parameters do not depend on a
    reference resolution, so one config works for every stage and size.
    Grids smaller than ``G`` are upsampled by replication (still linear).

    Defaults follow the Linformer paper: ``k = 256`` and, per layer, separate
    ``E`` and ``F`` shared by all heads; ``G = 16`` so that ``G^2 = k``.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads.
        proj_len: projected token count ``k``.
        pool_size: side ``G`` of the pooled key/value grid.
        share_kv: use one projection for keys and values (``E = F``).
        qkv_bias: bias in the joint q/k/v projection.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 proj_len: int = 256,
                 pool_size: int = 16,
                 share_kv: bool = False,
                 qkv_bias: bool = True,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, type(self).__name__)
        if proj_len < 1 or pool_size < 1:
            raise ValueError(f'proj_len and pool_size must be >= 1, got {proj_len} and '
                             f'{pool_size}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.proj_len = proj_len
        self.pool_size = pool_size
        self.share_kv = share_kv
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        # Linformer's E/F: no bias, a plain linear map of the token axis.
        self.proj_k = nn.Linear(pool_size * pool_size, proj_len, bias=False)
        self.proj_v = None if share_kv else nn.Linear(pool_size * pool_size, proj_len,
                                                      bias=False)

    def project_tokens(self, t: Tensor, hw_shape: tuple[int, int],
                       projection: nn.Linear) -> Tensor:
        """``(B, N, C)`` on an ``H x W`` grid -> ``(B, k, C)``."""
        grid = nlc_to_nchw(t, hw_shape)
        pooled = adaptive_avg_pool2d(grid, self.pool_size).flatten(2)  # (B, C, G^2)
        return projection(pooled).transpose(1, 2)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens laid out row-major on ``hw_shape``."""
        if x.shape[1] != math.prod(hw_shape):
            raise ValueError(f'{x.shape[1]} tokens do not fill the grid {tuple(hw_shape)}')
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k = self.project_tokens(k, hw_shape, self.proj_k)
        v = self.project_tokens(v, hw_shape, self.proj_k if self.share_kv else self.proj_v)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
