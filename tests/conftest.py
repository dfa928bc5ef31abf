"""Shared fixtures: a tiny ADE20K-layout dataset and a tiny UPerNet trained by our tools."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vvt_mm.testing import make_tiny_ade20k

ROOT = Path(__file__).resolve().parents[1]


def small_upernet_options(data_root: str, iters: int) -> list[str]:
    """``--cfg-options`` that run configs/upernet_vvt_t_ade20k.py at 64 px in seconds.

    The real config otherwise: same model family, pipeline and hooks.
    """
    return [
        'model.backbone.init_cfg=None', 'model.data_preprocessor.size=(64,64)',
        'model.decode_head.channels=16', 'model.auxiliary_head.channels=8',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=2',
        'train_dataloader.dataset.pipeline.2.scale=(128,64)',
        'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
        'val_dataloader.dataset.pipeline.1.scale=(128,64)',
        'test_dataloader.dataset.pipeline.1.scale=(128,64)',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2',
        'randomness.seed=0',
    ]


@pytest.fixture(scope='session')
def one_block_upernet_text() -> str:
    """A config: configs/upernet_vvt_t_ade20k.py with a one-block VVT of 16-128 channels.

    The entry config's hooks, pipeline and schedule otherwise, no drop path or
    dropout, no pretrained weights: distributed runs of it take seconds.
    """
    entry = ROOT / 'configs' / 'upernet_vvt_t_ade20k.py'
    return f"""_base_ = [{str(entry)!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=[16, 32, 64, 128], num_heads=[1, 1, 2, 4],
                            depths=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2]),
                  drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], dropout_ratio=0.0),
    auxiliary_head=dict(in_channels=64, dropout_ratio=0.0))
"""


@dataclass
class TrainedRun:
    config: Path
    data_root: str
    work_dir: Path
    checkpoint: Path
    iters: int

    def options(self, iters: int | None = None) -> list[str]:
        return small_upernet_options(self.data_root, iters or self.iters)


@pytest.fixture(scope='session')
def upernet_options():
    """:func:`small_upernet_options`, for tests that train their own run."""
    return small_upernet_options


@pytest.fixture(scope='session')
def tiny_ade20k(tmp_path_factory) -> str:
    return make_tiny_ade20k(str(tmp_path_factory.mktemp('ade')), num_train=4, num_val=2,
                            height=64, width=80)


@pytest.fixture(scope='session')
def upernet_trained_by_our_tools(tmp_path_factory, tiny_ade20k) -> TrainedRun:
    """configs/upernet_vvt_t_ade20k.py trained 2 iterations by our tools/train.py."""
    work = tmp_path_factory.mktemp('ours') / 'work'
    config = ROOT / 'configs' / 'upernet_vvt_t_ade20k.py'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work),
         '--cfg-options', *small_upernet_options(tiny_ade20k, 2)],
        cwd=work.parent, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return TrainedRun(config, tiny_ade20k, work, work / 'iter_2.pth', 2)
