"""LocalViT: DeiT with a locality feed-forward network (Li et al., arXiv 2104.05707)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from vvt_mm.checkpoint.localvit_keys import convert_localvit, is_official_localvit
from vvt_mm.registry import MODELS

from ..attention.builder import attention_class, build_attention, takes_extra_tokens
from ..layers.locality_ffn import LocalityFFN
from ..layers.strided_patch_embed import StridedPatchEmbed
from ..layers.token_grid import nchw_to_nlc, nlc_to_nchw
from .base import StagedBackbone, vit_init
from .utils import check_out_type, normalize_out_indices

# The token LayerNorms of DeiT and PVT (and so of both LocalViT backbones).
NORM_CFG = dict(type='LN', eps=1e-6)


def resize_pos_embed(pos_embed: Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                     num_extra_tokens: int, mode: str = 'bicubic') -> Tensor:
    """Interpolate the grid part of ``(1, extra + h*w, C)`` position embeddings.

    The extra (class) tokens' embeddings are kept as they are. A no-op when the
    grid already has the requested size, so the pretraining resolution runs
    the exact official computation. While exporting or compiling it always
    resizes (the same values: a bicubic resize to the same size is the
    identity, bit for bit), so the graph does not specialise to whether the
    traced grid was the stored one (dynamo would compile again for the other).
    """
    tracing = torch.compiler.is_exporting() or torch.compiler.is_compiling()
    if not tracing and tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    grid = F.interpolate(nlc_to_nchw(grid, src_hw), size=tuple(dst_hw), mode=mode,
                         align_corners=False)
    return torch.cat([extra, nchw_to_nlc(grid)], dim=1)


class LocalViTBlock(BaseModule):
    """``x + attn(norm1(x))`` then the locality FFN on the image tokens.

    There is no ``norm2`` and no drop path on the FFN branch: the FFN is
    applied to the raw token map and adds its own residual (official block).
    Extra tokens (the class token) skip the FFN.

    Args:
        embed_dims: token channels.
        num_heads: attention heads.
        mlp_ratio: FFN hidden channels / ``embed_dims``.
        attn_cfg: token mixer (``softmax`` for DeiT, ``spatial_reduction`` for PVT);
            it sees the extra tokens too, so with ``num_extra_tokens`` it must
            take them (:func:`~vvt_mm.models.attention.builder.takes_extra_tokens`).
        channel_attn: ``'se'``, ``'eca'``, ``'eca_hsigmoid'`` or ``None`` in the FFN.
        se_reduction: SE bottleneck is ``hidden // se_reduction`` channels.
        ffn_act_cfg: activation inside the FFN (h-swish).
        ffn_norm_cfg: the FFN's BatchNorms.
        drop_path: stochastic depth on the attention branch.
        norm_cfg: ``norm1`` (LayerNorm eps 1e-6).
        with_cp: activation checkpointing.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 attn_cfg: dict | None = None,
                 channel_attn: str | None = 'se',
                 se_reduction: int = 4,
                 ffn_act_cfg: dict | None = None,
                 ffn_norm_cfg: dict | None = None,
                 drop_path: float = 0.,
                 norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(norm_cfg or NORM_CFG, embed_dims)[1]
        self.attn = build_attention(attn_cfg or dict(type='softmax', qkv_bias=True),
                                    embed_dims=embed_dims, num_heads=num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn = LocalityFFN(embed_dims, mlp_ratio, channel_attn=channel_attn,
                               se_reduction=se_reduction, act_cfg=ffn_act_cfg,
                               norm_cfg=ffn_norm_cfg)

    def _forward(self, x: Tensor, hw_shape: tuple[int, int], num_extra_tokens: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        extra, tokens = x[:, :num_extra_tokens], x[:, num_extra_tokens:]
        tokens = nchw_to_nlc(self.ffn(nlc_to_nchw(tokens, hw_shape)))
        return torch.cat([extra, tokens], dim=1) if num_extra_tokens else tokens

    def forward(self, x: Tensor, hw_shape: tuple[int, int], num_extra_tokens: int = 0) -> Tensor:
        """``(B, extra + h*w, C)`` tokens, image tokens row-major on ``hw_shape``."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, num_extra_tokens,
                                 use_reentrant=False)
        return self._forward(x, hw_shape, num_extra_tokens)


@MODELS.register_module()
class LocalViT(StagedBackbone):
    """LocalViT on DeiT: a plain (single-scale) ViT with locality FFNs.

    Multi-scale outputs from a plain ViT: every block works on the same
    stride-16 grid, so ``out_indices`` picks *depths* (block indices, like
    mmseg's ``VisionTransformer``), and each returned map is
    ``(B, C, ceil(H/16), ceil(W/16))``. A pyramid for FPN-style heads is then
    made by a neck that resizes them, e.g. mmseg's ``MultiLevelNeck`` with
    ``scales=[4, 2, 1, 0.5]`` on ``out_indices=(2, 5, 8, 11)`` (see
    ``configs/fpn_localvit_t_ade20k.py``).

    Position embeddings are stored for the ``img_size`` grid (224/16 = 14x14
    as pretrained) and interpolated to the input's grid on every forward
    (bicubic by default); the class token's embedding is kept. Inputs are
    zero-padded at the bottom/right to multiples of the patch size, so any
    ``H x W`` works (the official code needs exactly 224x224).

    The token mixer is DeiT's softmax attention by default and any registered
    one through ``attn_cfg`` (e.g. ``dict(type='vicinity')``). A mixer that uses
    token positions (vicinity, linformer, a key/value reduction, CSA/RASA,
    VSA) mixes exactly the ``H x W`` grid, so with it the model has no class
    token (``with_cls_token`` defaults to whether the mixer takes one) and
    returns feature maps only.

    Args:
        arch: ``'tiny'`` (``'t'``), ``'tiny-se4'`` (``'t-se4'``), ``'small'``
            (``'s'``), ``'tiny-relu6'`` (the paper's ReLU6, mlp 6, no SE
            ablation) or a dict with ``embed_dims``, ``num_heads``, ``depth``,
            ``mlp_ratio`` (optional ``channel_attn``, ``se_reduction``,
            ``ffn_act_cfg``).
        img_size: input size the position embeddings were trained at.
        patch_size: patch size (16).
        in_channels: image channels.
        out_indices: block indices whose outputs are returned (``-1``: last).
        out_type: ``'featmap'`` (NCHW maps) or ``'cls_token'`` (``(B, C)``
            class tokens, for image classification).
        attn_cfg: token mixer of every block (official:
            ``dict(type='softmax', qkv_bias=True)``); mixer options go here.
        with_cls_token: prepend the class token; ``None``: if the mixer takes
            extra tokens (the official softmax does).
        final_norm: apply the final LayerNorm to the last block's output.
        interpolate_mode: position-embedding resize mode.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        norm_cfg: the blocks' ``norm1`` and the final norm (official: LayerNorm,
            eps 1e-6).
        ffn_norm_cfg: BatchNorm config of the FFNs (``SyncBN`` for dense tasks).
        with_cp: activation checkpointing of every block.
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` takes our layout
            or the official one (converted on load).
    """

    official_layout = (is_official_localvit, convert_localvit)

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(
            embed_dims=192, num_heads=4, depth=12, mlp_ratio=4, channel_attn='se',
            se_reduction=192)),
        **dict.fromkeys(['t-se4', 'tiny-se4'], dict(
            embed_dims=192, num_heads=4, depth=12, mlp_ratio=4, channel_attn='se',
            se_reduction=4)),
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=384, num_heads=8, depth=12, mlp_ratio=4, channel_attn='se',
            se_reduction=384)),
        'tiny-relu6': dict(embed_dims=192, num_heads=4, depth=12, mlp_ratio=6,
                           channel_attn=None, ffn_act_cfg=dict(type='ReLU6')),
    }
    essential_keys = {'embed_dims', 'num_heads', 'depth', 'mlp_ratio'}
    # The class token (1 with it, 0 without; set per model).
    num_extra_tokens = 1

    def __init__(self,
                 arch: str | dict = 'tiny',
                 img_size: int | Sequence[int] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: int | Sequence[int] = -1,
                 out_type: str = 'featmap',
                 attn_cfg: dict | None = None,
                 with_cls_token: bool | None = None,
                 final_norm: bool = True,
                 interpolate_mode: str = 'bicubic',
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict | None = None,
                 ffn_norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(arch, pretrained, init_cfg)
        owner = type(self).__name__
        arch = self.arch
        norm_cfg = norm_cfg or NORM_CFG
        self.out_type = check_out_type(out_type, owner)
        self.in_channels = in_channels
        self.embed_dims = arch['embed_dims']
        self.depth = arch['depth']
        self.out_indices = normalize_out_indices(out_indices, self.depth, owner)
        self.final_norm = final_norm
        self.interpolate_mode = interpolate_mode
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.pos_grid = (img_size[0] // patch_size, img_size[1] // patch_size)

        if attn_cfg is None:
            attn_cfg = dict(type='softmax', qkv_bias=True)
        attention_class(attn_cfg)  # a wrong type fails before anything is built

        self.patch_embed = StridedPatchEmbed(in_channels, self.embed_dims, patch_size)
        drop_paths = torch.linspace(0, drop_path_rate, self.depth).tolist()
        # Built before the (zero-initialised) embeddings, which draw no random
        # numbers, so the random init is the one of the official order.
        blocks = ModuleList([
            LocalViTBlock(
                self.embed_dims, arch['num_heads'], arch['mlp_ratio'], attn_cfg=attn_cfg,
                channel_attn=arch.get('channel_attn', 'se'),
                se_reduction=arch.get('se_reduction', 4),
                ffn_act_cfg=arch.get('ffn_act_cfg'), ffn_norm_cfg=ffn_norm_cfg,
                drop_path=drop_paths[i], norm_cfg=norm_cfg, with_cp=with_cp)
            for i in range(self.depth)
        ])
        self.with_cls_token = self._check_cls_token(with_cls_token, blocks[0].attn, attn_cfg)
        self.num_extra_tokens = int(self.with_cls_token)
        if self.with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_extra_tokens + self.pos_grid[0] * self.pos_grid[1],
                        self.embed_dims))
        self.blocks = blocks
        if final_norm:
            self.norm = build_norm_layer(norm_cfg, self.embed_dims)[1]

    def _check_cls_token(self, with_cls_token: bool | None, mixer: nn.Module,
                         attn_cfg: dict) -> bool:
        """Whether the model has a class token, refusing what the mixer cannot mix."""
        owner = type(self).__name__
        takes_it = takes_extra_tokens(mixer)
        if with_cls_token is None:
            with_cls_token = takes_it
        what = f"attn_cfg type {attn_cfg['type']!r} ({type(mixer).__name__})"
        if with_cls_token and not takes_it:
            raise ValueError(
                f'{owner}: {what} mixes only the H x W grid tokens (it uses their '
                'positions), so it cannot mix a class token: pass with_cls_token=False '
                "(feature maps), or a mixer without positions such as dict(type='softmax')")
        if self.out_type == 'cls_token' and not with_cls_token:
            raise ValueError(
                f"{owner}: out_type='cls_token' needs the class token, which this model "
                f"lacks (with_cls_token=False, or {what} cannot mix one); use "
                "out_type='featmap', or a mixer without positions such as "
                "dict(type='softmax')")
        return bool(with_cls_token)

    def default_init(self) -> None:
        """timm ViT init (trunc-normal linears and embeddings)."""
        nn.init.trunc_normal_(self.pos_embed, std=.02)
        if self.with_cls_token:
            nn.init.trunc_normal_(self.cls_token, std=.02)
        for m in self.modules():
            vit_init(m)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return the maps (or class tokens) after the blocks in ``out_indices``."""
        self.check_input(x)
        tokens, hw_shape = self.patch_embed(x)
        pos = resize_pos_embed(self.pos_embed, self.pos_grid, hw_shape,
                               self.num_extra_tokens, self.interpolate_mode)
        if self.with_cls_token:
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + pos
        outs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, hw_shape, self.num_extra_tokens)
            if i not in self.out_indices:
                continue
            out = self.norm(tokens) if self.final_norm and i == self.depth - 1 else tokens
            if self.out_type == 'cls_token':
                outs.append(out[:, 0])
            else:
                out = out[:, self.num_extra_tokens:]
                outs.append(nlc_to_nchw(out, hw_shape))
        return tuple(outs)
