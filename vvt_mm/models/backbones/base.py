"""Behaviour every vvt_mm backbone shares: pretrained loading and frozen stages."""
from __future__ import annotations

from collections.abc import Mapping

from mmengine.model import BaseModule


class StagedBackbone(BaseModule):
    """Base of our backbones.

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` goes
    through :func:`vvt_mm.checkpoint.load_pretrained` (safe reading, an honest
    report, official layouts converted by :meth:`convert_official`); with no
    ``init_cfg`` a subclass's :meth:`default_init` reproduces its official
    random init. Subclasses with ``self.stages`` get ``frozen_stages``.
    """

    frozen_stages: int = -1

    @staticmethod
    def convert_official(state_dict: Mapping) -> Mapping | None:
        """Official state dict -> ours; ``None`` when it is already ours."""
        return None

    def default_init(self) -> None:
        """The official random initialisation (override)."""

    def load_pretrained_cfg(self, init_cfg: dict) -> None:
        """Load ``init_cfg['checkpoint']`` (override to pick e.g. an EMA copy)."""
        from vvt_mm.checkpoint import load_pretrained
        load_pretrained(self, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'),
                        map_location=init_cfg.get('map_location', 'cpu'))

    def init_weights(self) -> None:
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            self.load_pretrained_cfg(self.init_cfg)
        elif self.init_cfg is not None:
            super().init_weights()
            return
        else:
            self.default_init()
        self._is_init = True

    def _freeze_stages(self) -> None:
        for stage in getattr(self, 'stages', [])[:max(self.frozen_stages, 0)]:
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> StagedBackbone:
        super().train(mode)
        self._freeze_stages()
        return self
