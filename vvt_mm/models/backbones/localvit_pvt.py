"""LocalViT-PVT: PVTv1 with locality FFNs (Li et al., arXiv 2104.05707, Table 4)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from vvt_mm.checkpoint.localvit_keys import convert_localvit_pvt, is_official_localvit_pvt
from vvt_mm.registry import MODELS

from ..attention.builder import attention_class, takes_extra_tokens, takes_option
from ..layers.strided_patch_embed import StridedPatchEmbed
from ..layers.token_grid import nlc_to_nchw
from .base import StagedBackbone, vit_init
from .localvit import NORM_CFG, LocalViTBlock, resize_pos_embed
from .utils import check_frozen_stages, check_out_type, check_per_stage, normalize_out_indices

# PVT's patch embeddings: LayerNorm with torch's default epsilon.
PATCH_NORM_CFG = dict(type='LN', eps=1e-5)


class LocalViTPVTStage(BaseModule):
    """Patchify, add (resized) position embeddings, run the blocks.

    Args:
        in_channels: input channels.
        embed_dims: token channels.
        patch_size: patchify stride (4 in stage 1, then 2).
        pos_grid: grid of the stored position embeddings (the pretraining size).
        depth, num_heads, mlp_ratio, sr_ratio: PVT stage hyper-parameters
            (``sr_ratio`` goes to mixers that take it).
        attn_cfg: token mixer of the blocks (PVT: ``spatial_reduction``).
        num_extra_tokens: 1 in the last stage (the class token), else 0.
        interpolate_mode: position-embedding resize mode.
        drop_paths: stochastic depth of each block.
        norm_cfg: the blocks' ``norm1``; ``patch_norm_cfg``: the patch embedding's.
        ffn_norm_cfg: BatchNorm config of the FFNs.
        with_cp: activation checkpointing.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 patch_size: int,
                 pos_grid: tuple[int, int],
                 depth: int,
                 num_heads: int,
                 mlp_ratio: float,
                 sr_ratio: int,
                 attn_cfg: dict | None = None,
                 num_extra_tokens: int = 0,
                 interpolate_mode: str = 'bilinear',
                 drop_paths: Sequence[float] = (),
                 norm_cfg: dict | None = None,
                 patch_norm_cfg: dict | None = None,
                 ffn_norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.pos_grid = pos_grid
        self.num_extra_tokens = num_extra_tokens
        self.interpolate_mode = interpolate_mode
        self.patch_embed = StridedPatchEmbed(in_channels, embed_dims, patch_size,
                                             norm_cfg=patch_norm_cfg or PATCH_NORM_CFG)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_extra_tokens + pos_grid[0] * pos_grid[1], embed_dims))
        attn_cfg = dict(attn_cfg or dict(type='spatial_reduction', qkv_bias=True))
        if takes_option(attention_class(attn_cfg), 'sr_ratio'):
            attn_cfg.setdefault('sr_ratio', sr_ratio)
        # SE squeezes the hidden width by embed_dims, i.e. to mlp_ratio channels
        # (official `LocalityFeedForward(dim, dim, 1, mlp_ratio, reduction=dim)`).
        self.blocks = ModuleList([
            LocalViTBlock(
                embed_dims, num_heads, mlp_ratio, attn_cfg=attn_cfg,
                channel_attn='se', se_reduction=embed_dims, ffn_norm_cfg=ffn_norm_cfg,
                drop_path=drop_paths[j] if drop_paths else 0., norm_cfg=norm_cfg,
                with_cp=with_cp)
            for j in range(depth)
        ])
        if num_extra_tokens and depth and not takes_extra_tokens(self.blocks[0].attn):
            raise ValueError(
                f"LocalViTPVT: the last stage carries the class token, which attn_cfg type "
                f"{attn_cfg['type']!r} ({type(self.blocks[0].attn).__name__}) cannot mix (it "
                "uses token positions); use a mixer without positions there, such as "
                "dict(type='spatial_reduction') with sr_ratio 1 or dict(type='softmax')")

    def forward(self, x: Tensor, extra: Tensor | None = None
                ) -> tuple[Tensor, tuple[int, int]]:
        """NCHW in; ``(B, extra + h*w, C)`` tokens and ``(h, w)`` out."""
        tokens, hw_shape = self.patch_embed(x)
        if self.num_extra_tokens:
            tokens = torch.cat([extra, tokens], dim=1)
        tokens = tokens + resize_pos_embed(self.pos_embed, self.pos_grid, hw_shape,
                                           self.num_extra_tokens, self.interpolate_mode)
        for block in self.blocks:
            tokens = block(tokens, hw_shape, self.num_extra_tokens)
        return tokens, hw_shape


@MODELS.register_module()
class LocalViTPVT(StagedBackbone):
    """LocalViT-PVT backbone: PVT-tiny whose MLPs are locality FFNs.

    A four-stage pyramid (strides 4/8/16/32) of spatial-reduction attention
    blocks. As in PVTv1, the class token joins the last stage only and the
    final LayerNorm is applied to the last stage only; stages 1-3 are returned
    as they leave their blocks. Position embeddings are stored for ``img_size``
    and interpolated (bilinear, as PVT's own dense-prediction code) to the input
    grid; inputs are zero-padded at the bottom/right so any size works.

    Args:
        arch: ``'tiny'`` (``'t'``) or a dict with ``embed_dims``, ``num_heads``,
            ``depths``, ``mlp_ratios``, ``sr_ratios``.
        img_size: input size the position embeddings were trained at.
        in_channels: image channels.
        out_indices: stages whose outputs are returned.
        out_type: ``'featmap'`` (NCHW maps) or ``'cls_token'`` (the normed class
            token, ``(B, C)``, for the last stage; image classification).
        attn_cfgs: token mixer of each stage (a list, or one dict for all);
            official: ``dict(type='spatial_reduction', qkv_bias=True)`` with the
            arch's ``sr_ratios``, which reach only mixers that take ``sr_ratio``.
            The last stage's mixer must take the class token.
        interpolate_mode: position-embedding resize mode.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        norm_cfg: the blocks' ``norm1`` and the final norm (official: LayerNorm,
            eps 1e-6); ``patch_norm_cfg``: the patch embeddings' (LN, eps 1e-5).
        ffn_norm_cfg: BatchNorm config of the FFNs (``SyncBN`` for dense tasks).
        with_cp: activation checkpointing of every block.
        frozen_stages: freeze the first ``n`` stages (``-1``: none).
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` takes our layout
            or the official one (converted on load).
    """

    official_layout = (is_official_localvit_pvt, convert_localvit_pvt)

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(
            embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8], depths=[2, 2, 2, 2],
            mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1])),
    }
    essential_keys = {'embed_dims', 'num_heads', 'depths', 'mlp_ratios', 'sr_ratios'}

    def __init__(self,
                 arch: str | dict = 'tiny',
                 img_size: int | Sequence[int] = 224,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_type: str = 'featmap',
                 attn_cfgs: dict | Sequence[dict] | None = None,
                 interpolate_mode: str = 'bilinear',
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict | None = None,
                 patch_norm_cfg: dict | None = None,
                 ffn_norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(arch, pretrained, init_cfg)
        owner = type(self).__name__
        arch = self.arch
        norm_cfg = norm_cfg or NORM_CFG
        num_stages = check_per_stage(arch, self.essential_keys, owner)
        if arch['sr_ratios'][-1] != 1:
            raise ValueError(f'{owner}: the last stage carries the class token, so its '
                             f'sr_ratio must be 1, got {arch["sr_ratios"][-1]}')
        self.out_type = check_out_type(out_type, owner)
        self.frozen_stages = check_frozen_stages(frozen_stages, num_stages, owner)
        self.out_indices = normalize_out_indices(out_indices, num_stages, owner)
        self.in_channels = in_channels
        self.embed_dims = list(arch['embed_dims'])
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if attn_cfgs is None or isinstance(attn_cfgs, dict):
            attn_cfgs = [attn_cfgs] * num_stages
        if len(attn_cfgs) != num_stages:
            raise ValueError(f'{owner}: attn_cfgs needs one config per stage ({num_stages}), '
                             f'got {len(attn_cfgs)}')

        drop_paths = torch.linspace(0, drop_path_rate, sum(arch['depths'])).tolist()
        self.stages = ModuleList()
        start, stride = 0, 1
        for i, depth in enumerate(arch['depths']):
            patch = 4 if i == 0 else 2
            stride *= patch
            self.stages.append(LocalViTPVTStage(
                in_channels if i == 0 else self.embed_dims[i - 1], self.embed_dims[i], patch,
                pos_grid=(img_size[0] // stride, img_size[1] // stride), depth=depth,
                num_heads=arch['num_heads'][i], mlp_ratio=arch['mlp_ratios'][i],
                sr_ratio=arch['sr_ratios'][i], attn_cfg=attn_cfgs[i],
                num_extra_tokens=1 if i == num_stages - 1 else 0,
                interpolate_mode=interpolate_mode,
                drop_paths=drop_paths[start:start + depth], norm_cfg=norm_cfg,
                patch_norm_cfg=patch_norm_cfg, ffn_norm_cfg=ffn_norm_cfg, with_cp=with_cp))
            start += depth
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims[-1]))
        self.norm = build_norm_layer(norm_cfg, self.embed_dims[-1])[1]
        self._freeze_stages()

    def default_init(self) -> None:
        """PVT init (trunc-normal linears and embeddings)."""
        nn.init.trunc_normal_(self.cls_token, std=.02)
        for stage in self.stages:
            nn.init.trunc_normal_(stage.pos_embed, std=.02)
        for m in self.modules():
            vit_init(m)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return NCHW maps of the stages in ``out_indices`` (strides 4/8/16/32)."""
        self.check_input(x)
        bsz, outs = x.shape[0], []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            extra = self.cls_token.expand(bsz, -1, -1) if i == last else None
            tokens, hw_shape = stage(x, extra)
            if i == last:
                tokens = self.norm(tokens)
                if self.out_type == 'cls_token':
                    outs.append(tokens[:, 0])
                    break
                tokens = tokens[:, 1:]
            x = nlc_to_nchw(tokens, hw_shape)
            if i in self.out_indices and self.out_type == 'featmap':
                outs.append(x)
        return tuple(outs)
