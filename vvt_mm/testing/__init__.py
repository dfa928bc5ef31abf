"""Synthetic data, reference weights and run comparison for tests, demos and benchmarks.

Nothing here downloads: datasets are generated (ADE20K, COCO and ImageNet
layouts, a few images each) and official-layout checkpoints are written from
randomly initialised models.
"""
from .official_vvt import ROOT, load_tool, official_checkpoint, to_official
from .runs import free_port, logged_scalars, max_tensor_diff, run_dirs
from .tiny_ade20k import make_tiny_ade20k
from .tiny_coco import make_tiny_coco
from .tiny_imagenet import make_tiny_imagenet

__all__ = ['ROOT', 'load_tool', 'official_checkpoint', 'to_official', 'make_tiny_ade20k',
           'make_tiny_coco', 'make_tiny_imagenet', 'free_port', 'logged_scalars',
           'max_tensor_diff', 'run_dirs']
