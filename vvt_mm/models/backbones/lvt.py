"""Lite Vision Transformer (LVT), Yang et al., CVPR 2022 (arXiv 2112.10809)."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from vvt_mm.checkpoint.lvt_keys import convert_lvt, is_official_lvt
from vvt_mm.registry import MODELS

from ..attention.builder import attention_class, build_attention
from ..layers import ConvFFN, OverlapPatchEmbed
from ..layers.lvt_attention import AtrousDepthwiseConv
from ..layers.pre_norm_block import PreNormBlock
from ..layers.token_grid import nlc_to_nchw
from .base import StagedBackbone, pvt_v2_init
from .utils import check_frozen_stages, check_per_stage, normalize_out_indices

# Official LVT uses LayerNorm with torch's default epsilon everywhere.
NORM_CFG = dict(type='LN', eps=1e-5)


class LinearFFN(BaseModule):
    """``fc1 -> act -> fc2`` on tokens (LVT stage 1 has no depthwise conv)."""

    def __init__(self, embed_dims: int, hidden_dims: int, act_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = build_activation_layer(act_cfg or dict(type='GELU'))
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LVTBlock(PreNormBlock):
    """Pre-norm block: ``x + mixer(norm1(x))``, ``x + ffn(norm2(x))``.

    Args:
        embed_dims: token channels.
        num_heads: attention heads.
        mlp_ratio: FFN hidden channels / ``embed_dims``.
        attn_cfg: token mixer config for :data:`ATTENTIONS` (``dict(type='csa')``,
            ``dict(type='rasa', ...)`` or any other mixer).
        sr_ratio: the stage's key/value reduction, for mixers that take ``sr_ratio``.
        ffn_dwconv: FFN with a depthwise 3x3 conv (stages 2-4) or plain.
        drop_path: stochastic depth.
        norm_cfg: ``norm1`` and ``norm2``.
        with_cp: activation checkpointing.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float,
                 attn_cfg: dict,
                 sr_ratio: int = 1,
                 ffn_dwconv: bool = True,
                 drop_path: float = 0.,
                 norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        norm_cfg = norm_cfg or NORM_CFG
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = build_attention(attn_cfg, optional=dict(sr_ratio=sr_ratio),
                                    embed_dims=embed_dims, num_heads=num_heads)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        hidden = int(embed_dims * mlp_ratio)
        self.ffn = (ConvFFN(embed_dims, hidden) if ffn_dwconv else
                    LinearFFN(embed_dims, hidden))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()


class LVTStage(BaseModule):
    """Overlapping patch embedding (7x7/4 or 3x3/2, LayerNorm) and blocks."""

    def __init__(self, in_channels: int, embed_dims: int, first: bool,
                 blocks: Sequence[dict], patch_norm_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.patch_embed = OverlapPatchEmbed(in_channels, embed_dims, 7 if first else 3,
                                             4 if first else 2,
                                             norm_cfg=patch_norm_cfg or NORM_CFG)
        self.blocks = ModuleList([LVTBlock(embed_dims, **cfg) for cfg in blocks])

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        tokens, hw_shape = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, hw_shape)
        return tokens, hw_shape


@MODELS.register_module()
class LVT(StagedBackbone):
    """Lite Vision Transformer backbone (the published 3.4M-parameter model).

    Four stages at strides 4/8/16/32: Convolutional Self-Attention in stage 1,
    Recursive Atrous Self-Attention in stages 2-4. No position embedding, and
    the CSA fold/unfold and RASA reduction handle any size (the reduction pads),
    so any ``H x W`` input works.

    The published mixers are the arch's ``mixers`` (``'csa'`` ->
    ``dict(type='csa')``, ``'rasa'`` -> ``dict(type='rasa', **rasa_cfg)``);
    ``attn_cfgs`` replaces them with any registered token mixers, one config
    per stage (or one for all). A stage's ``sr_ratios`` entry reaches its
    mixer only if that mixer takes ``sr_ratio`` (CSA does not: stage 1's 8 is
    unused, as officially).

    Each returned stage map goes through its own LayerNorm (``norm{i}``), as
    the official downstream model (``downstream_norms``); the official
    classifier's final ``norm`` is the same LayerNorm on stage 4, so it loads
    as ``norm3``. Norms exist only for the stages in ``out_indices``.

    Args:
        arch: ``'lvt'`` or a dict with ``embed_dims``, ``num_heads``, ``depths``,
            ``mlp_ratios``, ``sr_ratios``, ``mixers`` (optional ``ffn_dwconv``).
        in_channels: image channels.
        rasa_cfg: RASA settings of the arch's ``'rasa'`` stages
            (``atrous_rates=(1, 3, 5)``, ``recursions=2``).
        attn_cfgs: token mixer configs, a list with one per stage or one dict
            for every stage; ``None`` takes the arch's ``mixers``.
        out_indices: stages whose outputs are returned.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        norm_cfg: norms of the blocks and of the returned maps; ``patch_norm_cfg``:
            of the patch embeddings (official: both LayerNorm, eps 1e-5).
        with_cp: activation checkpointing of every block.
        frozen_stages: freeze the first ``n`` stages (``-1``: none).
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` takes our layout
            or the official one (converted on load).
    """

    official_layout = (is_official_lvt, convert_lvt)

    arch_zoo = {
        'lvt': dict(embed_dims=[64, 64, 160, 256], num_heads=[2, 2, 5, 8],
                    depths=[2, 2, 2, 2], mlp_ratios=[4, 8, 4, 4], sr_ratios=[8, 4, 2, 1],
                    mixers=['csa', 'rasa', 'rasa', 'rasa'],
                    ffn_dwconv=[False, True, True, True]),
    }
    essential_keys = {'embed_dims', 'num_heads', 'depths', 'mlp_ratios', 'sr_ratios',
                      'mixers'}

    def __init__(self,
                 arch: str | dict = 'lvt',
                 in_channels: int = 3,
                 rasa_cfg: dict | None = None,
                 attn_cfgs: dict | Sequence[dict] | None = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict | None = None,
                 patch_norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(arch, pretrained, init_cfg)
        owner = type(self).__name__
        arch = self.arch
        norm_cfg = norm_cfg or NORM_CFG
        num_stages = check_per_stage(arch, self.essential_keys, owner)
        arch.setdefault('ffn_dwconv', [i > 0 for i in range(num_stages)])
        check_per_stage(arch, {'depths', 'ffn_dwconv'}, owner)
        self.in_channels = in_channels
        self.out_indices = normalize_out_indices(out_indices, num_stages, owner)
        self.frozen_stages = check_frozen_stages(frozen_stages, num_stages, owner)
        self.embed_dims = list(arch['embed_dims'])
        attn_cfgs = self._stage_attn_cfgs(attn_cfgs, rasa_cfg, num_stages)

        # The official rate: drop_path_rate * k / (total - 1) for the k-th block.
        total = sum(arch['depths'])
        drop_paths = torch.linspace(0, drop_path_rate, total).tolist()
        self.stages = ModuleList()
        start = 0
        for i, depth in enumerate(arch['depths']):
            blocks = [dict(num_heads=arch['num_heads'][i], mlp_ratio=arch['mlp_ratios'][i],
                           attn_cfg=attn_cfgs[i], sr_ratio=arch['sr_ratios'][i],
                           ffn_dwconv=arch['ffn_dwconv'][i],
                           drop_path=drop_paths[start + j], norm_cfg=norm_cfg,
                           with_cp=with_cp)
                      for j in range(depth)]
            self.stages.append(LVTStage(in_channels if i == 0 else self.embed_dims[i - 1],
                                        self.embed_dims[i], i == 0, blocks,
                                        patch_norm_cfg=patch_norm_cfg))
            start += depth
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, self.embed_dims[i])[1])
        self._freeze_stages()

    def _stage_attn_cfgs(self, attn_cfgs: dict | Sequence[dict] | None,
                         rasa_cfg: dict | None, num_stages: int) -> list[dict]:
        """One token mixer config per stage, from ``attn_cfgs`` or the arch's mixers."""
        owner = type(self).__name__
        if attn_cfgs is None:
            rasa = {**dict(type='rasa', atrous_rates=(1, 3, 5), recursions=2), **(rasa_cfg or {})}
            published = dict(csa=dict(type='csa'), rasa=rasa)
            for mixer in self.arch['mixers']:
                if mixer not in published:
                    raise ValueError(
                        f"{owner}: arch mixers are 'csa' or 'rasa' (the published mixers), "
                        f'got {mixer!r}; for another token mixer pass attn_cfgs, e.g. '
                        f"attn_cfgs=dict(type={mixer!r})")
            return [copy.deepcopy(published[mixer]) for mixer in self.arch['mixers']]
        if rasa_cfg is not None:
            raise ValueError(f'{owner}: rasa_cfg sets up the arch mixers, which attn_cfgs '
                             "replaces; put RASA options in attn_cfgs (dict(type='rasa', ...))")
        if isinstance(attn_cfgs, dict):
            attn_cfgs = [attn_cfgs] * num_stages
        attn_cfgs = list(attn_cfgs)
        if len(attn_cfgs) != num_stages:
            raise ValueError(f'{owner}: attn_cfgs needs one config per stage ({num_stages}), '
                             f'got {len(attn_cfgs)}')
        for cfg in attn_cfgs:
            attention_class(cfg)  # a wrong type fails here, with the valid names
        return [copy.deepcopy(dict(cfg)) for cfg in attn_cfgs]

    def default_init(self) -> None:
        """Official init (trunc-normal linears, fan-out normal convs)."""
        self.apply(pvt_v2_init)
        for m in self.modules():
            if isinstance(m, AtrousDepthwiseConv):
                nn.init.kaiming_uniform_(m.weight)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return normed NCHW maps of the stages in ``out_indices`` (strides 4/8/16/32)."""
        self.check_input(x)
        outs = []
        for i, stage in enumerate(self.stages):
            tokens, hw_shape = stage(x)
            x = nlc_to_nchw(tokens, hw_shape)
            if i in self.out_indices:
                outs.append(nlc_to_nchw(getattr(self, f'norm{i}')(tokens), hw_shape))
        return tuple(outs)
