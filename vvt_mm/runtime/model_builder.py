"""Build a config's model the way our tools need it: in its library, without downloads.

``tools/infer.py``, ``tools/analysis/get_flops.py`` and
``tools/deployment/pytorch2onnx.py`` all build ``cfg.model`` outside a
``Runner``; doing what the runner does (the top-level ``data_preprocessor``,
the library's registry under its default scope) in one place keeps them from
drifting apart.
"""
from __future__ import annotations

import importlib

import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

__all__ = ['build_model_from_config', 'import_custom_modules']


def import_custom_modules(cfg: Config) -> None:
    """Import the config's ``custom_imports``, as the runner does.

    Our own backbones are registered already: importing this module imports
    ``vvt_mm``.
    """
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)


def build_model_from_config(cfg: Config, scope: str | None = None,
                            drop_pretrained: bool = True) -> nn.Module:
    """``cfg.model`` built by the registry of ``scope`` (default: the config's).

    With ``drop_pretrained`` the backbone's ``init_cfg`` and the model's
    ``pretrained`` are cleared, so weights loaded afterwards (or none, for
    counting) are all the model has and nothing is downloaded. Modifies
    ``cfg.model`` in place, as the runner does with ``data_preprocessor``.
    """
    import_custom_modules(cfg)
    scope = scope or cfg.get('default_scope', 'mmengine')
    if drop_pretrained:
        backbone = cfg.model.get('backbone')
        if backbone is not None and 'init_cfg' in backbone:
            backbone.init_cfg = None
        if 'pretrained' in cfg.model:
            cfg.model.pretrained = None
    # As mmengine's Runner does: mmpretrain configs keep it at the top level.
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg.model)
