"""A tiny synthetic dataset in the ADE20K layout (no download needed).

Layout (what mmseg's ``ADE20KDataset`` reads)::

    OUT/images/{training,validation}/*.jpg
    OUT/annotations/{training,validation}/*.png

Annotations follow ADE20K's ``reduce_zero_label`` semantics: 0 is "other"
(ignored after reduction), 1..150 are the classes. Each image is a few
axis-aligned rectangles of classes 1..``num-classes`` on background 0, and
every class has its own colour plus noise, so a model can learn the task and
the mIoU of a short run is meaningful rather than zero.
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ('training', 'validation')


def _palette(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    colours = rng.integers(0, 256, size=(num_classes + 1, 3))
    colours[0] = (110, 110, 110)  # "other"
    return colours.astype(np.float32)


def make_sample(rng: np.random.Generator, palette: np.ndarray, height: int, width: int,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image HxWx3 uint8, label HxW uint8)`` pair."""
    label = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(1, num_classes + 1))
        h = int(rng.integers(height // 4, height // 2 + 1))
        w = int(rng.integers(width // 4, width // 2 + 1))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        label[top:top + h, left:left + w] = cls
    image = palette[label] + rng.normal(0, 12, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_tiny_ade20k(out_dir: str, num_train: int = 16, num_val: int = 4, height: int = 96,
                     width: int = 128, num_classes: int = 4, seed: int = 0) -> str:
    """Create the dataset under ``out_dir`` and return its path."""
    if not 1 <= num_classes <= 150:
        raise ValueError(f'num_classes must be in 1..150 (ADE20K), got {num_classes}')
    rng = np.random.default_rng(seed)
    palette = _palette(num_classes, rng)
    root = Path(out_dir)
    for split, count in zip(SPLITS, (num_train, num_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = make_sample(rng, palette, height, width, num_classes)
            name = f'ADE_{split[:5]}_{i:08d}'
            Image.fromarray(image).save(root / 'images' / split / f'{name}.jpg', quality=95)
            Image.fromarray(label).save(root / 'annotations' / split / f'{name}.png')
    return osp.abspath(out_dir)
