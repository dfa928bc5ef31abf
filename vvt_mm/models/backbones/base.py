"""Behaviour every vvt_mm backbone shares: input checks, pretrained loading, frozen stages."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, normal_init, trunc_normal_init
from torch import Tensor

from .utils import check_image_input, resolve_arch, resolve_pretrained


def vit_init(module: nn.Module) -> None:
    """timm's ViT init of one module: trunc-normal linears, unit LayerNorms (biases zero)."""
    if isinstance(module, nn.Linear):
        trunc_normal_init(module, std=.02, bias=0.)
    elif isinstance(module, nn.LayerNorm):
        constant_init(module, val=1.0, bias=0.)


def pvt_v2_init(module: nn.Module) -> None:
    """PVTv2's random init, which VVT and LVT inherit: :func:`vit_init` plus
    fan-out normal convs (biases zero)."""
    if not isinstance(module, nn.Conv2d):
        vit_init(module)
    else:
        kh, kw = module.kernel_size
        fan_out = kh * kw * module.out_channels // module.groups
        normal_init(module, mean=0, std=math.sqrt(2.0 / fan_out), bias=0)


class StagedBackbone(BaseModule):
    """Base of our backbones.

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` goes
    through :func:`vvt_mm.checkpoint.load_pretrained` (safe reading, an honest
    report, official layouts converted by :meth:`convert_official`); with no
    ``init_cfg`` a subclass's :meth:`default_init` reproduces its official
    random init. Subclasses with ``self.stages`` get ``frozen_stages``;
    :meth:`check_input` refuses what their ``forward`` cannot take.

    ``__init__`` takes what every backbone takes first: ``arch`` (a name of
    ``arch_zoo`` or a dict with ``essential_keys``, resolved into
    ``self.arch``), the deprecated ``pretrained`` and ``init_cfg``.
    """

    frozen_stages: int = -1
    # Smallest input side that survives the total stride (1: any size).
    min_input_size: int = 1
    # ``(is_official, convert)`` of the official checkpoint layout, if any.
    official_layout: tuple[Callable[[Mapping], bool], Callable[[Mapping], Mapping]] | None = None
    arch_zoo: dict = {}
    essential_keys: set[str] = set()

    def __init__(self, arch: str | dict | None = None, pretrained: str | None = None,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(init_cfg=resolve_pretrained(pretrained, init_cfg))
        if arch is not None:
            self.arch = resolve_arch(arch, self.arch_zoo, self.essential_keys,
                                     type(self).__name__)

    @classmethod
    def convert_official(cls, state_dict: Mapping) -> dict | None:
        """Official state dict -> our backbone keys; ``None`` when already ours.

        The converters keep the classifier as ``head.*``; a backbone drops it.
        """
        if cls.official_layout is None:
            return None
        is_official, convert = cls.official_layout
        if not is_official(state_dict):
            return None
        return {k: v for k, v in convert(state_dict).items() if not k.startswith('head.')}

    def _checkpoint_filter(self, state_dict: dict, prefix: str, *args) -> None:
        """Load pre-hook of mmpretrain's ``ImageClassifier`` (it registers a
        backbone's ``_checkpoint_filter``): official classifier checkpoints load
        in full through ``get_model``/``load_from``, files that do not fit raise."""
        from vvt_mm.checkpoint.classifier_filter import filter_classifier_checkpoint
        filter_classifier_checkpoint(self, state_dict, prefix)

    def check_input(self, x: Tensor) -> None:
        """Refuse, with the fix, an image batch ``forward`` cannot process."""
        weight = next(self.parameters(), None)
        check_image_input(x, self.in_channels, self.min_input_size, type(self).__name__,
                          weight_dtype=None if weight is None else weight.dtype)

    def run_stages(self, x: Tensor) -> tuple[Tensor, ...]:
        """Check ``x``, run ``self.stages`` (NCHW in and out), keep ``out_indices``."""
        self.check_input(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def default_init(self) -> None:
        """The official random initialisation (override)."""

    def load_pretrained_cfg(self, init_cfg: dict) -> None:
        """Load ``init_cfg['checkpoint']`` (override to pick e.g. an EMA copy)."""
        from vvt_mm.checkpoint import load_pretrained
        load_pretrained(self, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'),
                        map_location=init_cfg.get('map_location', 'cpu'))

    def init_weights(self) -> None:
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            self._load_init_cfg_checkpoint()
        elif self.init_cfg is not None:
            super().init_weights()
            return
        else:
            self.default_init()
        self._is_init = True

    def _load_init_cfg_checkpoint(self) -> None:
        """:meth:`load_pretrained_cfg`, its file errors pointing at ``init_cfg``.

        ``init_weights`` usually runs deep inside a runner, far from the config
        line that named the file; the error says where to look.
        """
        from vvt_mm.checkpoint import CheckpointError
        try:
            self.load_pretrained_cfg(self.init_cfg)
        except (FileNotFoundError, IsADirectoryError, CheckpointError) as err:
            if 'init_cfg' in str(err):
                raise
            raise type(err)(f'{type(self).__name__} init_cfg: {err}') from err

    def _freeze_stages(self) -> None:
        for stage in getattr(self, 'stages', [])[:max(self.frozen_stages, 0)]:
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> StagedBackbone:
        super().train(mode)
        self._freeze_stages()
        return self
