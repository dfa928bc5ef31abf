"""Write a tiny synthetic dataset in the COCO layout mmdet reads.

    python tools/data/make_tiny_coco.py data/tiny_coco --num-train 4 --num-val 2

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

import argparse

from vvt_mm.testing.tiny_coco import make_tiny_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='dataset root to create')
    parser.add_argument('--num-train', type=int, default=4)
    parser.add_argument('--num-val', type=int, default=2)
    parser.add_argument('--num-classes', type=int, default=3)
    parser.add_argument('--sizes', type=int, nargs='+', default=[97, 150, 120, 88, 75, 131],
                        metavar='H W', help='image sizes as H W pairs, used in turn')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if len(args.sizes) % 2:
        parser.error('--sizes needs H W pairs')
    sizes = tuple(zip(args.sizes[::2], args.sizes[1::2]))
    path = make_tiny_coco(args.out_dir, args.num_train, args.num_val, sizes,
                          args.num_classes, args.seed)
    print(f'tiny COCO-layout dataset written to {path}')


if __name__ == '__main__':
    main()
