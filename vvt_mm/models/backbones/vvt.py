"""Vicinity Vision Transformer (VVT), arXiv 2206.10552 (TPAMI 2023)."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from vvt_mm.checkpoint.vvt_keys import convert_vvt, is_official_vvt
from vvt_mm.registry import MODELS

from ..attention.builder import attention_class, build_attention, mixers_taking, takes_option
from ..attention.spatial_reduction import SpatialReductionAttention
from ..layers import ConvFFN, OverlapPatchEmbed
from ..layers.pre_norm_block import PreNormBlock
from ..layers.token_grid import nlc_to_nchw
from .base import StagedBackbone, pvt_v2_init
from .utils import check_frozen_stages, check_per_stage, normalize_out_indices

# Official norms: LayerNorm eps 1e-6 in blocks and after each stage, 1e-5 in
# the patch embeddings.
NORM_CFG = dict(type='LN', eps=1e-6)
PATCH_NORM_CFG = dict(type='LN', eps=1e-5)


class VVTBlock(PreNormBlock):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, ``x + ffn(norm2(x))``.

    Args:
        embed_dims: token channels.
        num_heads: attention heads.
        mlp_ratio: FFN hidden channels / ``embed_dims``.
        attn_cfg: token mixer config for :data:`ATTENTIONS`; ``embed_dims``,
            ``num_heads`` and ``sr_ratio`` are filled in.
        sr_ratio: spatial reduction of keys/values (1 = none).
        drop_path: stochastic depth probability.
        norm_cfg: block norms (LayerNorm eps 1e-6 in VVT).
        with_cp: checkpoint this block's activations to save memory.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float,
                 attn_cfg: dict,
                 sr_ratio: int = 1,
                 drop_path: float = 0.,
                 norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or NORM_CFG
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        attn_cfg = copy.deepcopy(attn_cfg)
        if sr_ratio != 1:
            attn_cfg.setdefault('sr_ratio', sr_ratio)
        self.attn = build_attention(attn_cfg, embed_dims=embed_dims, num_heads=num_heads)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = ConvFFN(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()


class VVTStage(BaseModule):
    """Patch embedding, ``depth`` blocks and a closing norm (``norm_cfg``)."""

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 mlp_ratio: float,
                 attn_cfg: dict,
                 patch_size: int,
                 stride: int,
                 sr_ratio: int = 1,
                 drop_paths: Sequence[float] = (),
                 norm_cfg: dict | None = None,
                 patch_norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or NORM_CFG
        self.patch_embed = OverlapPatchEmbed(in_channels, embed_dims, patch_size, stride,
                                             norm_cfg=patch_norm_cfg or PATCH_NORM_CFG)
        self.blocks = ModuleList([
            VVTBlock(embed_dims, num_heads, mlp_ratio, attn_cfg, sr_ratio=sr_ratio,
                     drop_path=drop_paths[j] if drop_paths else 0., norm_cfg=norm_cfg,
                     with_cp=with_cp)
            for j in range(depth)
        ])
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, x: Tensor) -> Tensor:
        """NCHW in, NCHW out."""
        tokens, hw_shape = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, hw_shape)
        tokens = self.norm(tokens)
        return nlc_to_nchw(tokens, hw_shape)


@MODELS.register_module()
class VVT(StagedBackbone):
    """Vicinity Vision Transformer backbone.

    A four-stage pyramid (strides 4/8/16/32) of Vicinity Attention Blocks:
    linear attention with a 2D Manhattan-distance cosine re-weighting, computed
    in a feature-reduced space and gated back by the Feature Preserving
    Connection. No position embedding, so any input size works.

    Args:
        arch: ``'tiny'|'small'|'medium'|'large'`` (or ``t/s/m/l``), or a dict
            with ``embed_dims``, ``num_heads``, ``depths``, ``mlp_ratios``.
        in_channels: image channels.
        sr_ratios: per-stage spatial reduction of keys/values (VVT_sr, Fig. 8);
            ``None`` means none (1 in every stage). Only mixers with an
            ``sr_ratio`` option take it, and ``spatial_reduction`` needs it.
        attn_cfg: token mixer for every block (``dict(type='vicinity')``);
            swap it to run the paper's attention ablation. Mixer options go
            here, e.g. ``dict(type='vicinity', feature_reduction=2)`` (FR, 2 in
            the paper and the mixer's default).
        norm_cfg: norms of the blocks and after each stage (official: LN, eps
            1e-6); ``patch_norm_cfg``: of the patch embeddings (LN, eps 1e-5).
        out_indices: stages whose outputs are returned.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        with_cp: activation checkpointing of every block.
        frozen_stages: freeze the first ``n`` stages (``-1``: none).
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` accepts our layout
            or the official one (converted on load).
    """

    official_layout = (is_official_vvt, convert_vvt)

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(
            embed_dims=[96, 160, 320, 512], num_heads=[1, 2, 5, 8],
            depths=[2, 2, 2, 2], mlp_ratios=[8, 8, 4, 4])),
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=[96, 160, 320, 512], num_heads=[1, 2, 5, 8],
            depths=[3, 3, 9, 3], mlp_ratios=[8, 8, 4, 4])),
        **dict.fromkeys(['m', 'medium'], dict(
            embed_dims=[96, 160, 320, 512], num_heads=[1, 2, 5, 8],
            depths=[3, 3, 27, 3], mlp_ratios=[8, 8, 4, 4])),
        **dict.fromkeys(['l', 'large'], dict(
            embed_dims=[96, 160, 320, 512], num_heads=[1, 2, 5, 8],
            depths=[4, 4, 36, 4], mlp_ratios=[4, 4, 4, 4])),
    }
    essential_keys = {'embed_dims', 'num_heads', 'depths', 'mlp_ratios'}
    min_input_size = 32

    def __init__(self,
                 arch: str | dict = 'small',
                 in_channels: int = 3,
                 sr_ratios: Sequence[int] | None = None,
                 attn_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 patch_norm_cfg: dict | None = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None,
                 **mixer_options) -> None:
        if mixer_options:
            options = ', '.join(f'{k}={v!r}' for k, v in mixer_options.items())
            raise TypeError(
                f'VVT got {options}, which VVT itself does not take; a token-mixer option '
                f"goes in attn_cfg, e.g. attn_cfg=dict(type='vicinity', {options})")
        super().__init__(arch, pretrained, init_cfg)
        owner = type(self).__name__
        arch = self.arch
        num_stages = check_per_stage(arch, self.essential_keys, owner)
        self.in_channels = in_channels
        if attn_cfg is None:
            attn_cfg = dict(type='vicinity')
        sr_ratios = self._check_sr_ratios(sr_ratios, attn_cfg, num_stages)
        self.out_indices = normalize_out_indices(out_indices, num_stages, owner)
        self.frozen_stages = check_frozen_stages(frozen_stages, num_stages, owner)
        self.with_cp = with_cp
        self.embed_dims = list(arch['embed_dims'])

        total_depth = sum(arch['depths'])
        drop_paths = torch.linspace(0, drop_path_rate, total_depth).tolist()
        self.stages = ModuleList()
        start = 0
        for i, depth in enumerate(arch['depths']):
            self.stages.append(
                VVTStage(
                    in_channels=in_channels if i == 0 else self.embed_dims[i - 1],
                    embed_dims=self.embed_dims[i],
                    depth=depth,
                    num_heads=arch['num_heads'][i],
                    mlp_ratio=arch['mlp_ratios'][i],
                    attn_cfg=attn_cfg,
                    patch_size=7 if i == 0 else 3,
                    stride=4 if i == 0 else 2,
                    sr_ratio=sr_ratios[i],
                    drop_paths=drop_paths[start:start + depth],
                    norm_cfg=norm_cfg,
                    patch_norm_cfg=patch_norm_cfg,
                    with_cp=with_cp))
            start += depth
        self._freeze_stages()

    def _check_sr_ratios(self, sr_ratios: Sequence[int] | None, attn_cfg: dict,
                         num_stages: int) -> list[int]:
        """Per-stage ratios that the token mixer can honour.

        A mixer without ``sr_ratio`` would fail with Python's bare
        ``unexpected keyword``, and spatial-reduction attention without ratios
        silently becomes global attention in every stage.
        """
        owner = type(self).__name__
        mixer = attention_class(attn_cfg)
        if sr_ratios is None:
            if issubclass(mixer, SpatialReductionAttention) and 'sr_ratio' not in attn_cfg:
                raise ValueError(
                    f"{owner}: attn_cfg=dict(type={attn_cfg['type']!r}) needs sr_ratios, "
                    'else every stage runs global attention (sr_ratio 1); pass e.g. '
                    f'sr_ratios={(8, 4, 2, 1)[-num_stages:]} (PVTv2), or '
                    f'sr_ratios={(1, ) * num_stages} for global attention on purpose')
            return [1] * num_stages
        if len(sr_ratios) != num_stages:
            raise ValueError(f'{owner}: sr_ratios needs one ratio per stage ({num_stages}), '
                             f'got {list(sr_ratios)}')
        if any(r != 1 for r in sr_ratios) and not takes_option(mixer, 'sr_ratio'):
            takers = ', '.join(map(repr, mixers_taking('sr_ratio')))
            raise ValueError(
                f"{owner}: attn_cfg type {attn_cfg['type']!r} ({mixer.__name__}) takes no "
                f'spatial reduction, but sr_ratios={list(sr_ratios)} asks for one; drop '
                f'sr_ratios or use a mixer with sr_ratio: {takers}')
        return list(sr_ratios)

    def default_init(self) -> None:
        """Official init (trunc-normal linears, fan-out normal convs)."""
        self.apply(pvt_v2_init)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return NCHW maps of the stages in ``out_indices`` (strides 4/8/16/32)."""
        return self.run_stages(x)
