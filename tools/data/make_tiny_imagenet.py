"""Write a tiny synthetic dataset in the ImageNet layout mmpretrain reads.

    python tools/data/make_tiny_imagenet.py data/tiny_imagenet --num-classes 4

Layout (``mmpretrain::_base_/datasets/imagenet_*.py`` with ``data_root=OUT``)::

    OUT/train/<wnid>/<wnid>_<i>.JPEG     OUT/meta/train.txt  ("<wnid>/<file> <label>")
    OUT/val/<wnid>/val_<i>.JPEG          OUT/meta/val.txt

Labels are the first ``num-classes`` of ImageNet's 1000, so a config with a
1000-way head trains unchanged. Each class has its own colour and stripe
direction plus noise, so a short run can learn something.
"""
from __future__ import annotations

import argparse

from vvt_mm.testing.tiny_imagenet import make_tiny_imagenet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='dataset root to create')
    parser.add_argument('--num-classes', type=int, default=4)
    parser.add_argument('--num-train', type=int, default=4, help='train images per class')
    parser.add_argument('--num-val', type=int, default=2, help='val images per class')
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    path = make_tiny_imagenet(args.out_dir, args.num_classes, args.num_train, args.num_val,
                              args.size, args.seed)
    print(f'tiny ImageNet-layout dataset written to {path}')


if __name__ == '__main__':
    main()
