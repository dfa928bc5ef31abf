"""Convert an official VVT checkpoint to an OpenMMLab one.

    # mmpretrain ImageClassifier (backbone.* + head.fc.*), e.g. for tools/test.py
    python tools/model_converters/vvt2mm.py vvt_small.pth pretrained/vvt_small_in1k-mm.pth
    # backbone keys only, for mmseg/mmdet `init_cfg=dict(type='Pretrained', ...)`
    python tools/model_converters/vvt2mm.py vvt_small.pth pretrained/vvt_small.pth --backbone-only

The key mapping is ``vvt_mm.checkpoint.convert_vvt`` (the one the backbone
also applies on load, so configs may point at the official file directly).
The source is read with ``weights_only=True``; a file in our layout already
(``stages.*`` or ``backbone.stages.*``) is re-wrapped without renaming.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from collections import OrderedDict
from collections.abc import Mapping

import torch

from vvt_mm.checkpoint import (
    convert_vvt,
    extract_state_dict,
    is_official_vvt,
    read_checkpoint,
    strip_prefix,
    to_classifier_keys,
)


def to_mm(state_dict: Mapping, backbone_only: bool = False) -> OrderedDict:
    """Official (or our) VVT weights -> ImageClassifier or bare-backbone keys.

    Classifier layout: ``backbone.stages.*`` and ``head.fc.*``. Backbone-only
    layout: ``stages.*`` (what ``VVT`` loads without a prefix).
    """
    if is_official_vvt(state_dict):
        ours = convert_vvt(state_dict)
    else:
        ours = strip_prefix(state_dict, 'backbone.')
        if not any(k.startswith('stages.') for k in ours):
            raise ValueError('not a VVT checkpoint: no official keys (block1.*, '
                             'patch_embed1.*) and no stages.*; its keys look like '
                             f'{list(state_dict)[:3]}')
    for key in ours:
        if not key.startswith(('head.', 'stages.')):
            raise KeyError(f'unexpected key {key!r} after conversion')
    if backbone_only:
        return OrderedDict((k, v) for k, v in ours.items() if not k.startswith('head.'))
    return to_classifier_keys(ours)


def convert_file(src: str, dst: str, backbone_only: bool = False) -> OrderedDict:
    """Read ``src``, convert and save ``{'state_dict': ..., 'meta': ...}`` to ``dst``."""
    state_dict = extract_state_dict(read_checkpoint(src))
    converted = to_mm(state_dict, backbone_only)
    if osp.dirname(dst):
        os.makedirs(osp.dirname(dst), exist_ok=True)
    meta = dict(converted_from=osp.basename(src), converter='vvt2mm',
                layout='backbone' if backbone_only else 'mmpretrain ImageClassifier')
    torch.save(dict(state_dict=converted, meta=meta), dst)
    return converted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description='Convert an official VVT checkpoint to OpenMMLab keys.')
    parser.add_argument('src', help='official checkpoint ({"model": sd} or a bare state dict)')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write backbone keys only (stages.*), for mmseg/mmdet init_cfg')
    args = parser.parse_args(argv)
    try:
        converted = convert_file(args.src, args.dst, args.backbone_only)
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        sys.exit(f'error: {err}')
    numel = sum(v.numel() for v in converted.values())
    heads = sum(k.startswith('head.') for k in converted)
    print(f'wrote {args.dst}: {len(converted)} tensors, {numel / 1e6:.2f}M values'
          f'{"" if args.backbone_only else f", {heads} head tensors"}')


if __name__ == '__main__':
    main()
