"""mmpretrain's and mmdet's own entry points on checkpoints trained by our tools/train.py.

As tests/tools/test_stock_tools.py does for mmseg: the configs name only
``custom_imports=dict(imports=['vvt_mm'])`` and our ``CheckpointSafetyHook``;
the scripts are the libraries' installed ``.mim/tools``, run outside the
repository without PYTHONPATH. Each library trains once (one epoch of two
iterations on generated data) in a module-scoped fixture.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import vvt_mm  # noqa: F401  (the test process reads checkpoints weights-only too)
from vvt_mm.testing import make_tiny_coco, make_tiny_imagenet

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict:
    """No PYTHONPATH: only the installed vvt_mm, found by custom_imports, is importable."""
    return {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}


def stock_script(package: str, name: str) -> Path:
    module = __import__(package)
    script = Path(module.__file__).parent / '.mim' / 'tools' / name
    if not script.is_file():
        pytest.skip(f'this {package} wheel ships no {script}')
    return script


def run_script(script: Path, args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=clean_env())
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


DET_CLASSES = ('person', 'bicycle', 'car')  # make_tiny_coco's default num_classes=3


def loader_options(key: str, data_root: str, batch_size: int) -> list[str]:
    return [f'{key}.dataset.data_root={data_root}', f'{key}.batch_size={batch_size}',
            f'{key}.num_workers=0', f'{key}.persistent_workers=False']


def classifier_options(data_root: str, epochs: int) -> list[str]:
    """configs/vvt_t_in1k.py's own pipelines at 64 px crops instead of 224."""
    options = ['train_dataloader.dataset.pipeline.1.scale=64',
               f'train_cfg.max_epochs={epochs}',
               'default_hooks.logger.interval=1', 'randomness.seed=0']
    options += loader_options('train_dataloader', data_root, 2)
    for key in ('val_dataloader', 'test_dataloader'):
        options += loader_options(key, data_root, 2)
        options += [f'{key}.dataset.pipeline.1.scale=72',
                    f'{key}.dataset.pipeline.2.crop_size=64']
    return options


def detector_options(data_root: str, epochs: int) -> list[str]:
    """configs/retinanet_vvt_t_fpn_1x_coco.py resizing to (128, 96), without weight files.

    The tiny dataset's 3 classes, as users fine-tune on their own: with all 80,
    CocoMetric finds no category id for labels beyond the annotation file's.
    Two iterations from random init score below 0.05: keep every box so that
    COCO evaluation has predictions to score.
    """
    ann = f'{data_root}annotations/instances_val2017.json'
    options = ['model.backbone.init_cfg=None', 'model.test_cfg.score_thr=0.0',
               f'model.bbox_head.num_classes={len(DET_CLASSES)}',
               'train_dataloader.dataset.pipeline.2.scale=(128,96)',
               f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
               f'train_cfg.max_epochs={epochs}',
               'default_hooks.logger.interval=1', 'randomness.seed=0']
    options += loader_options('train_dataloader', data_root, 2)
    for key in ('val_dataloader', 'test_dataloader'):
        options += loader_options(key, data_root, 1)
        options.append(f'{key}.dataset.pipeline.1.scale=(128,96)')
    classes = '(' + ','.join(DET_CLASSES) + ')'
    options += [f'{key}.dataset.metainfo.classes={classes}'
                for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return options


@dataclass
class TrainedRun:
    config: Path
    data_root: str
    work_dir: Path
    make_options: Callable[[str, int], list[str]]

    @property
    def checkpoint(self) -> Path:
        return self.work_dir / 'epoch_1.pth'

    def options(self, epochs: int = 1) -> list[str]:
        return self.make_options(self.data_root, epochs)


def train_with_our_tools(config: str, data_root: str, work: Path,
                         make_options: Callable[[str, int], list[str]]) -> TrainedRun:
    """One epoch (2 iterations) of ``config`` by our tools/train.py."""
    run = TrainedRun(ROOT / 'configs' / config, data_root, work, make_options)
    run_script(ROOT / 'tools' / 'train.py',
               [str(run.config), '--work-dir', str(work), '--cfg-options', *run.options()],
               work.parent)
    assert run.checkpoint.is_file()
    return run


@pytest.fixture(scope='module')
def classifier_trained_by_our_tools(tmp_path_factory) -> TrainedRun:
    """configs/vvt_t_in1k.py on 2 classes x 2 images (train) / 1 image (val)."""
    base = tmp_path_factory.mktemp('cls')
    root = make_tiny_imagenet(
        str(base / 'in1k'), num_classes=2, num_train=2, num_val=1, size=72)
    return train_with_our_tools('vvt_t_in1k.py', root, base / 'work', classifier_options)


@pytest.fixture(scope='module')
def detector_trained_by_our_tools(tmp_path_factory) -> TrainedRun:
    """configs/retinanet_vvt_t_fpn_1x_coco.py on 4 train / 2 val images of odd sizes.

    The sizes are all landscape, so the aspect-ratio batch sampler makes two
    full batches of 2.
    """
    base = tmp_path_factory.mktemp('det')
    root = make_tiny_coco(
        str(base / 'coco'), num_train=4, num_val=2, sizes=((97, 150), (75, 131)))
    return train_with_our_tools('retinanet_vvt_t_fpn_1x_coco.py', root + '/', base / 'work',
                                detector_options)


def check_stock_test(package: str, run: TrainedRun, tmp_path: Path, metric: str) -> None:
    output = run_script(stock_script(package, 'test.py'),
                        [str(run.config), str(run.checkpoint), '--work-dir', str(tmp_path),
                         '--cfg-options', *run.options()], tmp_path)
    assert 'Weights only load failed' not in output
    assert f'Load checkpoint from {run.checkpoint}' in output
    assert re.search(rf'Epoch\(test\).*{re.escape(metric)}: \d', output), output[-2000:]


def check_stock_resume(package: str, run: TrainedRun, tmp_path: Path) -> None:
    """Stock ``tools/train.py --resume`` continues at epoch 2 of our 1-epoch run.

    The newest file in the copied work dir is truncated (a kill while writing),
    and ``last_checkpoint`` names it: auto-resume must skip it for epoch_1.pth.
    """
    work = tmp_path / 'work'
    shutil.copytree(run.work_dir, work)
    (work / 'epoch_2.pth').write_bytes(b'PK\x03\x04' + b'\0' * 64)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    output = run_script(stock_script(package, 'train.py'),
                        [str(run.config), '--work-dir', str(work), '--resume',
                         '--cfg-options', *run.options(epochs=2)], tmp_path)
    assert 'Weights only load failed' not in output
    assert 'auto-resume: skipping' in output and 'epoch_2.pth' in output
    assert 'resumed epoch: 1, iter: 2' in output
    assert re.search(r'Epoch\(train\)\s*\[2\]\[1/2\]', output), output[-2000:]
    assert not re.search(r'Epoch\(train\)\s*\[1\]\[', output)
    # The truncated file was replaced, atomically: no temporary file left behind.
    saved = torch.load(str(work / 'epoch_2.pth'), map_location='cpu', weights_only=True)
    assert saved['meta']['epoch'] == 2 and saved['meta']['iter'] == 4
    assert not list(work.glob('.epoch_2.pth.tmp-*'))


@pytest.mark.slow
def test_stock_mmpretrain_test_script_evaluates_our_checkpoint(
        classifier_trained_by_our_tools, tmp_path):
    check_stock_test('mmpretrain', classifier_trained_by_our_tools, tmp_path,
                     'accuracy/top1')


@pytest.mark.slow
def test_stock_mmpretrain_train_resumes_our_checkpoint(classifier_trained_by_our_tools,
                                                       tmp_path):
    check_stock_resume('mmpretrain', classifier_trained_by_our_tools, tmp_path)


@pytest.mark.slow
def test_stock_mmdet_test_script_evaluates_our_checkpoint(detector_trained_by_our_tools,
                                                          tmp_path):
    check_stock_test('mmdet', detector_trained_by_our_tools, tmp_path, 'coco/bbox_mAP')


@pytest.mark.slow
def test_stock_mmdet_train_resumes_our_checkpoint(detector_trained_by_our_tools, tmp_path):
    check_stock_resume('mmdet', detector_trained_by_our_tools, tmp_path)
