"""Write a tiny synthetic dataset in the ADE20K layout (no download needed).

    python tools/data/make_tiny_ade20k.py data/tiny_ade20k --num-train 16 --num-val 4

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

import argparse

from vvt_mm.testing.tiny_ade20k import make_tiny_ade20k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='dataset root to create')
    parser.add_argument('--num-train', type=int, default=16)
    parser.add_argument('--num-val', type=int, default=4)
    parser.add_argument('--height', type=int, default=96)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--num-classes', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    path = make_tiny_ade20k(args.out_dir, args.num_train, args.num_val, args.height,
                            args.width, args.num_classes, args.seed)
    print(f'tiny ADE20K-layout dataset written to {path}')


if __name__ == '__main__':
    main()
