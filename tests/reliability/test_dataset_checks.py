"""A dataset folder with the wrong layout fails before the runner, showing the expected layout.

The configs are the libraries' own dataset bases (ADE20K from mmseg, ImageNet
from mmpretrain, COCO from mmdet) pointed at folders we build, right or wrong.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from vvt_mm.engine import DatasetLayoutError, check_dataset_layout

ROOT = Path(__file__).resolve().parents[2]
ADE = 'mmseg::_base_/datasets/ade20k.py'
IMAGENET = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'
COCO = 'mmdet::_base_/datasets/coco_detection.py'


def image(path: Path, mode: str = 'RGB') -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8, 3) if mode == 'RGB' else (8, 8)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)


def config(base: str, root: Path) -> Config:
    """The library's dataset base with every dataloader's data_root set to ``root``."""
    entry = root.parent / f'{root.name}_{base.split("::")[0]}_cfg.py'
    entry.write_text(f'_base_ = [{base!r}]\n')
    cfg = Config.fromfile(str(entry))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(root)
    return cfg


def make_ade(root: Path) -> Path:
    for split in ('training', 'validation'):
        image(root / 'images' / split / f'ADE_{split}_1.jpg')
        image(root / 'annotations' / split / f'ADE_{split}_1.png', mode='L')
    return root


def layout_error(cfg, loaders=('train_dataloader', 'val_dataloader')) -> str:
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset_layout(cfg, loaders)
    return str(info.value)


def test_ade20k_layout_passes(tmp_path):
    check_dataset_layout(config(ADE, make_ade(tmp_path / 'ade')))


def test_ade20k_root_one_level_too_high_shows_the_expected_layout(tmp_path):
    make_ade(tmp_path / 'ade' / 'ADEChallengeData2016')
    message = layout_error(config(ADE, tmp_path / 'ade'))
    assert 'ADE20KDataset' in message
    assert f"images folder '{tmp_path / 'ade' / 'images' / 'training'}' does not exist" \
        in message
    assert 'images/training/*.jpg' in message and 'annotations/validation/*.png' in message
    # Both loaders share the problem, reported once each.
    assert 'train_dataloader' in message and 'val_dataloader' in message


def test_ade20k_without_label_maps_is_reported(tmp_path):
    root = make_ade(tmp_path / 'ade')
    for png in (root / 'annotations' / 'training').iterdir():
        png.unlink()
    message = layout_error(config(ADE, root), ('train_dataloader', ))
    assert "has no *.png files" in message and 'annotations' in message


def test_imagenet_class_folders_pass_and_flat_folders_fail(tmp_path):
    for split in ('train', 'val'):
        image(tmp_path / 'good' / split / 'n01440764' / 'a.JPEG')
        image(tmp_path / 'flat' / split / 'a.JPEG')
    check_dataset_layout(config(IMAGENET, tmp_path / 'good'))
    message = layout_error(config(IMAGENET, tmp_path / 'flat'))
    assert 'has no class subfolders (its images lie directly in it)' in message
    assert 'train/<class>/*.JPEG' in message and 'meta/train.txt' in message


def test_imagenet_with_image_lists_needs_the_listed_folder(tmp_path):
    (tmp_path / 'meta').mkdir()
    (tmp_path / 'meta' / 'train.txt').write_text('x/a.JPEG 0\n')
    (tmp_path / 'meta' / 'val.txt').write_text('a.JPEG 0\n')
    (tmp_path / 'train').mkdir()
    message = layout_error(config(IMAGENET, tmp_path))
    assert f"image folder '{tmp_path / 'val'}' does not exist" in message


def make_coco(root: Path, content) -> Path:
    for split in ('train2017', 'val2017'):
        image(root / split / '1.jpg')
        ann = root / 'annotations' / f'instances_{split}.json'
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(content if isinstance(content, str) else json.dumps(content))
    return root


def test_coco_json_is_checked_for_format(tmp_path):
    valid = dict(images=[], annotations=[], categories=[])
    check_dataset_layout(config(COCO, make_coco(tmp_path / 'ok', valid)))
    message = layout_error(config(COCO, make_coco(tmp_path / 'seg', dict(images=[]))))
    assert "not in COCO format: it lacks ['annotations', 'categories']" in message
    message = layout_error(config(COCO, make_coco(tmp_path / 'cut', '{"images": [')))
    assert 'is not valid JSON' in message


def test_coco_missing_annotations_show_the_layout(tmp_path):
    message = layout_error(config(COCO, tmp_path))
    assert 'instances_train2017.json' in message and 'train2017/*.jpg' in message


def test_remote_and_unknown_datasets_are_left_alone():
    cfg = dict(train_dataloader=dict(dataset=dict(type='CocoDataset', data_root='s3://b/c',
                                                  ann_file='x.json')),
               val_dataloader=dict(dataset=dict(type='MyOwnDataset', data_root='/nowhere')))
    check_dataset_layout(cfg)


def test_wrapped_datasets_are_checked(tmp_path):
    cfg = config(ADE, tmp_path / 'missing')
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=cfg.train_dataloader.dataset)
    assert 'ADE20KDataset' in layout_error(cfg, ('train_dataloader', ))


def test_train_py_stops_before_building_the_runner_with_a_clear_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/upernet_vvt_t_ade20k.py', '--work-dir',
         str(tmp_path / 'wd'), '--cfg-options',
         f'train_dataloader.dataset.data_root={tmp_path}',
         f'val_dataloader.dataset.data_root={tmp_path}'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    first = proc.stderr.strip().splitlines()[0]
    print(f'\nwrong dataset folder -> {first}')
    assert first.startswith('error: wrong dataset folder for train_dataloader')
    assert "images folder" in first and 'does not exist' in first
    assert 'images/training/*.jpg' in proc.stderr
    assert not (tmp_path / 'wd').exists() or not any((tmp_path / 'wd').glob('*.pth'))
