"""A tiny synthetic dataset in the ImageNet layout mmpretrain reads.

Layout (``mmpretrain::_base_/datasets/imagenet_*.py`` with ``data_root=OUT``)::

    OUT/train/<wnid>/<wnid>_<i>.JPEG     OUT/meta/train.txt  ("<wnid>/<file> <label>")
    OUT/val/<wnid>/val_<i>.JPEG          OUT/meta/val.txt

Labels are the first ``num-classes`` of ImageNet's 1000, so a config with a
1000-way head trains unchanged. Each class has its own colour and stripe
direction plus noise, so a short run can learn something.
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ('train', 'val')


def make_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """An ``size x size x 3`` uint8 image whose colour and stripes encode ``label``."""
    hue = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 40) % 256])
    yy, xx = np.mgrid[0:size, 0:size]
    period = 4 + 2 * (label % 5)
    stripes = ((xx if label % 2 else yy) // period) % 2
    image = hue[None, None, :] * (0.6 + 0.4 * stripes[..., None])
    image = image + rng.normal(0, 15, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_tiny_imagenet(out_dir: str, num_classes: int = 4, num_train: int = 4,
                       num_val: int = 2, size: int = 64, seed: int = 0) -> str:
    """Create ``num_train``/``num_val`` images per class under ``out_dir``."""
    if not 1 <= num_classes <= 1000:
        raise ValueError(f'num_classes must be in 1..1000 (ImageNet), got {num_classes}')
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    for split, count in zip(SPLITS, (num_train, num_val)):
        lines = []
        for label in range(num_classes):
            wnid = f'n{label:08d}'
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = f'{wnid}_{i}.JPEG' if split == 'train' else f'val_{label}_{i}.JPEG'
                Image.fromarray(make_image(rng, label, size)).save(folder / name,
                                                                   format='JPEG', quality=95)
                lines.append(f'{wnid}/{name} {label}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return osp.abspath(out_dir)
