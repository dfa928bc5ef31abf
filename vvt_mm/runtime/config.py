"""Read a config for our tools, failing with a clear message on a wrong path."""
from __future__ import annotations

import os.path as osp
import sys

from mmengine.config import Config

__all__ = ['configs_dir', 'load_config']


def configs_dir() -> str:
    """Our configs: ``configs/`` of a source checkout, else the installed ``.mim`` copy."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    checkout = osp.join(osp.dirname(package), 'configs')
    return checkout if osp.isdir(checkout) else osp.join(package, '.mim', 'configs')


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """``Config.fromfile`` plus ``--cfg-options``; exits with a one-line error if absent."""
    if not osp.isfile(path):
        sys.exit(f'error: config file {path!r} does not exist; configs live in '
                 f'{configs_dir()}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
