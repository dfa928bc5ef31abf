"""A tiny synthetic dataset in the COCO layout mmdet reads.

Layout (``mmdet::_base_/datasets/coco_{detection,instance}.py`` with
``data_root=OUT/``)::

    OUT/train2017/*.jpg   OUT/annotations/instances_train2017.json
    OUT/val2017/*.jpg     OUT/annotations/instances_val2017.json

Images have arbitrary, different sizes (``--sizes``), so the resize/pad path
of the detectors is exercised. Each holds a few filled rectangles and
triangles of the first ``num-classes`` COCO categories (real names and ids,
so ``CocoDataset`` keeps them) with boxes, polygon masks and areas.
"""
from __future__ import annotations

import json
import os.path as osp
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The first COCO categories (id, name); CocoDataset matches them by name.
COCO_CATEGORIES = [(1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'),
                   (5, 'airplane'), (6, 'bus'), (7, 'train'), (8, 'truck')]
SPLITS = ('train2017', 'val2017')


def make_sample(rng: np.random.Generator, height: int, width: int, num_classes: int,
                image_id: int, first_ann_id: int) -> tuple[Image.Image, list[dict]]:
    """One image and its COCO annotations (a polygon per object)."""
    image = Image.fromarray(
        np.clip(rng.normal(110, 20, size=(height, width, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    anns = []
    for k in range(int(rng.integers(1, 4))):
        cat_index = int(rng.integers(0, num_classes))
        cat_id = COCO_CATEGORIES[cat_index][0]
        w = int(rng.integers(max(8, width // 6), max(9, width // 2)))
        h = int(rng.integers(max(8, height // 6), max(9, height // 2)))
        x0 = int(rng.integers(0, width - w))
        y0 = int(rng.integers(0, height - h))
        if cat_index % 2:  # triangle
            poly = [x0, y0 + h, x0 + w / 2, y0, x0 + w, y0 + h]
            area = w * h / 2
        else:
            poly = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
            area = w * h
        colour = tuple(int(c) for c in (np.array([60, 140, 220]) * (cat_index + 1)) % 256)
        draw.polygon(poly, fill=colour)
        anns.append(dict(id=first_ann_id + k, image_id=image_id, category_id=cat_id,
                         bbox=[x0, y0, w, h], area=float(area), iscrowd=0,
                         segmentation=[[float(p) for p in poly]]))
    return image, anns


def make_tiny_coco(out_dir: str, num_train: int = 4, num_val: int = 2,
                   sizes: tuple[tuple[int, int], ...] = ((97, 150), (120, 88), (75, 131)),
                   num_classes: int = 3, seed: int = 0) -> str:
    """Create the dataset under ``out_dir``; ``sizes`` are (H, W), used in turn."""
    if not 1 <= num_classes <= len(COCO_CATEGORIES):
        raise ValueError(f'num_classes must be in 1..{len(COCO_CATEGORIES)}, got {num_classes}')
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i, name=n, supercategory='thing')
                  for i, n in COCO_CATEGORIES[:num_classes]]
    ann_id = 1
    for split, count in zip(SPLITS, (num_train, num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            height, width = sizes[i % len(sizes)]
            image_id = i + 1
            image, anns = make_sample(rng, height, width, num_classes, image_id, ann_id)
            ann_id += len(anns)
            name = f'{image_id:012d}.jpg'
            image.save(root / split / name, quality=95)
            images.append(dict(id=image_id, file_name=name, height=height, width=width))
            annotations.extend(anns)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return osp.abspath(out_dir)
