"""ViTAEv2 with Varied-Size Window Attention (ViTAEv2-VSA), arXiv 2204.08446."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import constant_init, trunc_normal_, trunc_normal_init
from torch import Tensor

from vvt_mm.checkpoint.vitaev2_keys import convert_vitaev2_vsa, is_official_vitaev2_vsa
from vvt_mm.registry import MODELS

from ..attention.builder import attention_class, mixers_taking, takes_option
from ..layers.varied_size_window_attention import VariedSizeWindowAttention
from ..layers.vitaev2_cells import NormalCell, ReductionCell
from .base import StagedBackbone
from .utils import check_frozen_stages, check_per_stage, normalize_out_indices

# PCM conv groups, shared by every official variant.
_GROUPS = dict(nc_groups=[1, 32, 64, 128], rc_groups=[1, 16, 32, 64])


class ViTAEv2VSAStage(BaseModule):
    """One reduction cell, then ``depth`` normal cells; NCHW in and out."""

    def __init__(self,
                 reduction: ReductionCell,
                 blocks: Sequence[NormalCell],
                 with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.reduction = reduction
        self.blocks = ModuleList(blocks)
        self.with_cp = with_cp

    def _run(self, cell: nn.Module, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(cell, x, use_reentrant=False)
        return cell(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self._run(self.reduction, x)
        for block in self.blocks:
            x = self._run(block, x)
        return x


@MODELS.register_module()
class ViTAEv2VSA(StagedBackbone):
    """ViTAEv2 backbone whose cells attend with Varied-Size Window Attention.

    Four stages at strides 4/8/16/32. Each stage starts with a reduction cell
    (dilated-conv pyramid + VSA, beside a strided conv branch) and continues
    with normal cells (VSA beside a grouped conv branch). Windows are padded
    symmetrically and cropped back, so any input size works, down to maps
    smaller than a window.

    Differences from the official detection code, all on inputs it could not
    process or mis-handled: inputs whose size is not a multiple of a stage's
    stride are zero-padded at the bottom/right (officially the two branches
    disagree in size and the cell fails); VSA divides x-offsets by the window
    count along x (officially along y, identical on square maps) counted after
    padding (officially before, which is 0 on maps smaller than a window).
    Where every stage's map is a multiple of the window (inputs of 224, 448,
    ...) the computation is the official one. Stochastic depth increases linearly over
    all normal cells (the official schedule restarts per stage by mistake).

    The cells' attention is VSA (``attn_cfg=dict(type='vsa')``); any registered
    token mixer can take its place (e.g. ``dict(type='vicinity')``). The
    cells give it ``window_size``, the dropouts and, in reduction cells, the
    output width where it takes them; a mixer without an output width is
    followed by a linear map to it in reduction cells.

    Args:
        arch: ``'s'|'small'``, ``'48m'`` or ``'b'|'base'``, or a dict with
            ``embed_dims`` (PRM widths), ``token_dims`` (stage widths),
            ``depths``, ``nc_heads``, ``rc_heads``, ``nc_groups``,
            ``rc_groups`` and ``wide_pcm``.
        in_channels: image channels.
        window_size: VSA window (7 for every official variant); also sets the
            CPE kernel (``window_size // 2 * 2 + 1``).
        attn_cfg: token mixer of every cell (``dict(type='vsa')``); mixer
            options go here.
        mlp_ratio: normal-cell MLP/PCM expansion.
        kernel_sizes: PRM kernels per stage.
        dilations: PRM dilations per stage.
        cpe: depthwise conv position encoding before each attention.
        drop_rate: dropout in MLPs and after attention projections.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linear over normal cells.
        norm_cfg: token norms of the normal cells (official: LayerNorm, eps
            1e-6); ``reduction_norm_cfg``: of the reduction cells (LN, eps 1e-5).
        pcm_norm_cfg: norm of the conv branches (``dict(type='SyncBN')`` for
            multi-GPU segmentation/detection).
        out_indices: stages whose outputs are returned.
        with_cp: activation checkpointing of every cell.
        frozen_stages: freeze the first ``n`` stages (``-1``: none).
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` accepts our layout
            or the official one (converted on load); from official files the
            EMA weights are taken (``use_ema=False`` in the dict to opt out).
    """

    official_layout = (is_official_vitaev2_vsa, convert_vitaev2_vsa)

    arch_zoo = {
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=[64, 64, 128, 256], token_dims=[64, 128, 256, 512],
            depths=[2, 2, 8, 2], nc_heads=[2, 4, 8, 16], rc_heads=[2, 2, 4, 8],
            wide_pcm=False, **_GROUPS)),
        '48m': dict(
            embed_dims=[96, 96, 192, 384], token_dims=[96, 192, 384, 768],
            depths=[2, 2, 11, 2], nc_heads=[3, 6, 12, 24], rc_heads=[3, 6, 12, 24],
            wide_pcm=True, **_GROUPS),
        **dict.fromkeys(['b', 'base'], dict(
            embed_dims=[128, 128, 256, 512], token_dims=[128, 256, 512, 1024],
            depths=[2, 2, 12, 2], nc_heads=[4, 8, 16, 32], rc_heads=[4, 8, 16, 32],
            wide_pcm=True, **_GROUPS)),
    }
    essential_keys = {'embed_dims', 'token_dims', 'depths', 'nc_heads', 'rc_heads',
                      'nc_groups', 'rc_groups', 'wide_pcm'}
    downsample_ratios = (4, 2, 2, 2)
    min_input_size = 1

    def __init__(self,
                 arch: str | dict = 'small',
                 in_channels: int = 3,
                 window_size: int = 7,
                 attn_cfg: dict | None = None,
                 mlp_ratio: float = 4.,
                 kernel_sizes: Sequence[int] = (7, 3, 3, 3),
                 dilations: Sequence[Sequence[int]] = ((1, 2, 3, 4), (1, 2, 3), (1, 2),
                                                       (1, 2)),
                 cpe: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict | None = None,
                 reduction_norm_cfg: dict | None = None,
                 pcm_norm_cfg: dict | None = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(arch, pretrained, init_cfg)
        owner = type(self).__name__
        arch = self.arch
        num_stages = check_per_stage(arch, self.essential_keys - {'wide_pcm'}, owner,
                                     num_stages=len(self.downsample_ratios))
        if len(kernel_sizes) != num_stages or len(dilations) != num_stages:
            raise ValueError(f'{owner} has {num_stages} stages; got kernel_sizes '
                             f'{list(kernel_sizes)}, dilations {list(dilations)}')
        self.in_channels = in_channels
        self.out_indices = normalize_out_indices(out_indices, num_stages, owner)
        self.frozen_stages = check_frozen_stages(frozen_stages, num_stages, owner)
        self.embed_dims = list(arch['token_dims'])
        attn_cfg = dict(attn_cfg or dict(type='vsa'))
        mixer = attention_class(attn_cfg)
        if attn_drop_rate and not takes_option(mixer, 'attn_drop'):
            takers = ', '.join(map(repr, mixers_taking('attn_drop')))
            raise ValueError(f"{owner}: attn_cfg type {attn_cfg['type']!r} ({mixer.__name__}) "
                             f'takes no attn_drop, but attn_drop_rate={attn_drop_rate} asks '
                             f'for it; drop attn_drop_rate or use a mixer with attn_drop: '
                             f'{takers}')

        drop_paths = torch.linspace(0, drop_path_rate, sum(arch['depths'])).tolist()
        self.stages = ModuleList()
        start, channels = 0, in_channels
        for i, depth in enumerate(arch['depths']):
            reduction = ReductionCell(
                channels, arch['embed_dims'][i], arch['token_dims'][i],
                stride=self.downsample_ratios[i], kernel_size=kernel_sizes[i],
                dilations=dilations[i], num_heads=arch['rc_heads'][i],
                groups=arch['rc_groups'][i], wide_pcm=arch['wide_pcm'],
                window_size=window_size, cpe=cpe, attn_cfg=attn_cfg,
                norm_cfg=reduction_norm_cfg, pcm_norm_cfg=pcm_norm_cfg)
            blocks = [
                NormalCell(arch['token_dims'][i], arch['nc_heads'][i], mlp_ratio=mlp_ratio,
                           groups=arch['nc_groups'][i], window_size=window_size, cpe=cpe,
                           attn_cfg=attn_cfg, drop=drop_rate, attn_drop=attn_drop_rate,
                           drop_path=drop_paths[start + j], norm_cfg=norm_cfg,
                           pcm_norm_cfg=pcm_norm_cfg)
                for j in range(depth)
            ]
            self.stages.append(ViTAEv2VSAStage(reduction, blocks, with_cp=with_cp))
            start += depth
            channels = arch['token_dims'][i]
        self._freeze_stages()

    def default_init(self) -> None:
        """Official init (trunc-normal linears, unit norms)."""
        # Convolutions keep PyTorch's default init, as officially.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                constant_init(m, val=1.0, bias=0.)
            elif isinstance(m, VariedSizeWindowAttention):
                m.reset_sampling_parameters()
                trunc_normal_(m.relative_position_bias_table, std=.02)

    def load_pretrained_cfg(self, init_cfg: dict) -> None:
        """Load ``init_cfg['checkpoint']``, preferring its EMA weights.

        Official ImageNet checkpoints (timm trainer) hold ``state_dict`` and
        ``state_dict_ema``; the published accuracy and the official downstream
        loader use the EMA copy, so do we unless ``use_ema=False``.
        """
        from vvt_mm.checkpoint import load_pretrained, read_checkpoint
        checkpoint = init_cfg['checkpoint']
        map_location = init_cfg.get('map_location', 'cpu')
        if isinstance(checkpoint, str):
            source = checkpoint
            checkpoint = read_checkpoint(checkpoint, map_location)
            ema = checkpoint.get('state_dict_ema') if isinstance(checkpoint, Mapping) else None
            if init_cfg.get('use_ema', True) and isinstance(ema, Mapping):
                print_log(f'{source}: loading its EMA weights (state_dict_ema)',
                          logger='current')
                checkpoint = ema
        load_pretrained(self, checkpoint, prefix=init_cfg.get('prefix'),
                        map_location=map_location)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """NCHW maps of the stages in ``out_indices``, of size ``ceil(H / stride)``."""
        return self.run_stages(x)
