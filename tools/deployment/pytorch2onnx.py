"""Export a classifier, a segmentor or a backbone of a config to ONNX.

    python tools/deployment/pytorch2onnx.py configs/vvt_t_in1k.py vvt_t_in1k.pth \
        --shape 224 224 --dynamic --verify --out vvt_t_in1k.onnx
    python tools/deployment/pytorch2onnx.py configs/upernet_vvt_t_ade20k.py iter_160000.pth \
        --shape 512 512 --dynamic --verify
    python tools/deployment/pytorch2onnx.py configs/fpn_vvt_t_ade20k.py --backbone-only \
        --shape 512 512

The graph's input ``input`` is one *normalised* float32 NCHW image (batch 1):
the config's data preprocessor (mean/std and channel order, printed by the
tool; a segmentor's padding) is not part of the graph but applied before it.
Its outputs:

* classifier (mmpretrain ``ImageClassifier``): ``logits``, ``(1, classes)``,
  before the softmax that turns them into scores;
* segmentor (mmseg ``EncoderDecoder``): ``seg_logits``, ``(1, classes, H, W)``,
  the decode head's logits resized to the input (whole-image inference; a
  config's ``slide`` test mode is not part of the graph);
* backbone (``--backbone-only``, or a config whose ``model`` is a backbone
  such as ``dict(type='VVT', arch='tiny')``): ``feat0``, ``feat1``, ... the
  backbone's NCHW maps.

Detectors are not supported (their box decoding and NMS are not part of this
tool); ``--backbone-only`` exports a detector's backbone.

``--dynamic`` keeps H and W symbolic in ``--size-range`` (default 64..4096),
and the graph is captured by ``torch.export`` so that a graph which would be
specialised to the traced size is an error, never a file. Every backbone and
every VVT ``attn_cfg`` type exports with dynamic H, W: vicinity attention
exports its official formulation, whose token angles come from the actual
H, W of each run; position embeddings (LocalViT, LocalViT-PVT) are resized
in the graph; padding to strides and windows is computed from the size;
adaptive pooling modules (UPerNet's PPM, whose ONNX lowering would keep the
traced windows) are swapped for an exact equivalent that follows H, W.
What cannot is refused before export, naming the module and the alternative:

* a window or a spatial reduction in a deep stage raises the lowest dynamic
  size: a module at stride ``s`` coarsening by ``r`` needs H, W above ``s * r``
  (ViTAEv2-VSA's window 7 at stride 32: 225; VVT ``sr_ratios=(4, 4, 4, 4)``:
  129), because below it reduces its map to one cell, a size torch.export
  specialises. The default range starts there; export at a size inside it
  (the graph then serves all of it), or at a fixed size without ``--dynamic``.
* ``impl='torch'``/``'triton'`` vicinity attention (dynamic or not): custom
  kernels the exporters cannot translate; the default ``impl='auto'`` exports.

``--verify`` runs the file in onnxruntime next to PyTorch on random inputs at
the export size and, with ``--dynamic``, at two more non-square sizes, prints
the largest absolute and relative error of every output (relative: over the
largest magnitude of PyTorch's output) and exits with status 1 past 1e-4.

Without CHECKPOINT the model is randomly initialised (a warning says so); a
checkpoint must hold the whole model (``vvt_mm.checkpoint.load_whole_model``),
or, for a backbone config, the backbone (our layout, a whole model's
``backbone.*`` or the official layout).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import os.path as osp
import sys

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm

import vvt_mm  # noqa: F401  (registers the backbones)
from vvt_mm.checkpoint import (
    CheckpointError,
    check_whole_model,
    describe_load,
    extract_state_dict,
    load_whole_model,
    read_checkpoint,
    strip_prefix,
)
from vvt_mm.deployment import (
    MAX_RELATIVE_ERROR,
    SIZE_RANGE,
    ClassifierLogits,
    ExportError,
    SegmentorLogits,
    compare_with_onnxruntime,
    dynamic_size_range,
    export_onnx,
    verification_sizes,
)
from vvt_mm.registry import MODELS
from vvt_mm.runtime import build_model_from_config

SCOPES = dict(mmpretrain='classifier', mmseg='segmentor', mmdet='detector')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a classifier (logits), segmentor (per-pixel logits at the input '
        'size) or backbone (feature maps) of a config to ONNX. The graph takes one '
        'already-normalised float32 NCHW image: apply the data preprocessor\'s mean/std and '
        'channel order before it (the tool prints them). Detectors are not supported '
        '(--backbone-only exports their backbone).')
    parser.add_argument('config', help='config file: a classifier, a segmentor, or a model '
                        "that is a backbone, e.g. model = dict(type='VVT', arch='tiny')")
    parser.add_argument('checkpoint', nargs='?', help='weights of the whole model (a '
                        'backbone config: of the backbone); without it the model is randomly '
                        'initialised, for checking the export only')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='input size to trace with (with --dynamic, one size of the range)')
    parser.add_argument('--dynamic', action='store_true',
                        help='keep H and W dynamic (in --size-range) instead of fixing them')
    parser.add_argument('--size-range', type=int, nargs=2, metavar=('MIN', 'MAX'),
                        help=f'range of H and W with --dynamic (default {SIZE_RANGE[0]} '
                        f'{SIZE_RANGE[1]}, or from the model\'s own lower limit if higher, '
                        'e.g. 225 for ViTAEv2-VSA)')
    parser.add_argument('--backbone-only', action='store_true',
                        help="export model.backbone: its feature maps feat0, feat1, ...")
    parser.add_argument('--out', help='the .onnx file (default: <config name>.onnx, '
                        '<config name>_backbone.onnx with --backbone-only)')
    parser.add_argument('--verify', action='store_true',
                        help='compare with PyTorch in onnxruntime at the export size (and two '
                        f'more with --dynamic); exit 1 past {MAX_RELATIVE_ERROR:g} relative error')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.arch=tiny')
    return parser.parse_args(argv)


def model_kind(cfg: Config, backbone_only: bool) -> str:
    """``'backbone'``, ``'classifier'`` or ``'segmentor'``; exits on what is not exportable."""
    model_type = cfg.model.get('type')
    if isinstance(model_type, str) and model_type in MODELS.module_dict:
        return 'backbone'
    scope = cfg.get('default_scope')
    kind = SCOPES.get(scope)
    if kind is None:
        sys.exit(f'error: the config has default_scope={scope!r} and model type '
                 f'{model_type!r}: pytorch2onnx.py exports mmpretrain classifiers, mmseg '
                 "segmentors and our backbones (model = dict(type='VVT', ...))")
    if backbone_only:
        return 'backbone'
    if kind == 'detector':
        sys.exit(f'error: the config is an mmdet detector ({model_type}); detectors are not '
                 'supported (box decoding and NMS are not part of the export): pass '
                 '--backbone-only to export its backbone, or use mmdeploy')
    if kind == 'segmentor' and model_type != 'EncoderDecoder':
        sys.exit(f'error: segmentor type {model_type!r} is not supported; only mmseg '
                 'EncoderDecoder (pass --backbone-only for its backbone)')
    return kind


def build_full_model(cfg: Config) -> nn.Module:
    """The config's classifier/segmentor/detector, without pretrained downloads."""
    return build_model_from_config(cfg, cfg.default_scope)


def load_backbone_checkpoint(backbone: nn.Module, path: str) -> int:
    """Load a backbone file (ours, a whole model's ``backbone.*`` or official); tensors loaded."""
    state_dict = strip_prefix(extract_state_dict(read_checkpoint(path)), 'module.')
    layout = 'OpenMMLab'
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = strip_prefix(state_dict, 'backbone.', only=True)
    else:
        converted = getattr(backbone, 'convert_official', lambda sd: None)(state_dict)
        if converted is not None:
            state_dict, layout = converted, f'official {type(backbone).__name__}'
    report = check_whole_model(backbone, state_dict, path, layout)
    backbone.load_state_dict(state_dict)
    return len(report.matched)


@contextlib.contextmanager
def _quiet_mmengine():
    """Without mmengine's INFO lines (init_weights logs every parameter it visits)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(cfg: Config, kind: str, checkpoint: str | None) -> nn.Module:
    """The module to export, with the checkpoint's weights, in eval mode on the CPU."""
    if kind == 'backbone' and cfg.model.get('type') in MODELS.module_dict:
        model = MODELS.build(cfg.model)
        if checkpoint:
            count = load_backbone_checkpoint(model, checkpoint)
            print(f'{checkpoint}: loaded {count} tensors (the whole backbone)')
    else:
        model = build_full_model(cfg)
        if checkpoint:
            report, _ = load_whole_model(model, checkpoint)
            print('\n'.join(describe_load(report, checkpoint)))
    if not checkpoint:
        print('warning: no checkpoint given: the model is randomly initialised (the file '
              'only shows that the model exports)')
        with _quiet_mmengine():
            model.init_weights()
    # SyncBN needs a process group; in eval mode it computes what BN does.
    model = revert_sync_batchnorm(model).cpu().eval()
    if kind == 'backbone' and hasattr(model, 'backbone'):
        return model.backbone
    return {'classifier': ClassifierLogits, 'segmentor': SegmentorLogits}.get(
        kind, lambda m: m)(model)


def preprocessing_note(cfg: Config) -> str | None:
    """What the data preprocessor does before the network (the graph leaves it out)."""
    pre = cfg.get('data_preprocessor') or cfg.model.get('data_preprocessor')
    if not pre or pre.get('mean') is None:
        return None
    rgb = pre.get('to_rgb', pre.get('bgr_to_rgb', False))
    return (f'the graph expects {"RGB" if rgb else "BGR (as mmcv reads them)"} images '
            f'normalised as the data preprocessor does: (x - {list(pre["mean"])}) / '
            f'{list(pre["std"])}')


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if path is not None and not osp.isfile(path):
            sys.exit(f'error: {what} file {path!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    kind = model_kind(cfg, args.backbone_only)
    try:
        model = build_model(cfg, kind, args.checkpoint)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        sys.exit(f'error: tools/deployment/pytorch2onnx.py: {err}')

    height, width = args.shape
    inner = getattr(model, 'model', model)  # the classifier/segmentor in its wrapper
    channels = getattr(getattr(inner, 'backbone', inner), 'in_channels', 3)
    example = torch.randn(1, channels, height, width)
    size_range = SIZE_RANGE
    if args.dynamic:
        size_range = (tuple(args.size_range) if args.size_range else
                      dynamic_size_range(model, channels))
    with torch.no_grad():
        outputs = model(example)
    if kind == 'backbone':
        names = [f'feat{i}' for i in range(len(outputs))]
    else:
        names = ['logits' if kind == 'classifier' else 'seg_logits']

    stem = osp.splitext(osp.basename(args.config))[0]
    out = args.out or f'{stem}{"_backbone" if kind == "backbone" else ""}.onnx'
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    try:
        export_onnx(model, example, out, dynamic=args.dynamic, size_range=size_range,
                    output_names=names)
    except ExportError as err:
        sys.exit(f'error: {err}')
    dims = (f'H, W dynamic in [{size_range[0]}, {size_range[1]}]' if args.dynamic else
            f'fixed {height}x{width}')
    print(f'exported the {kind} to {out} ({osp.getsize(out) / 2**20:.1f} MiB): input '
          f'"input" 1x{example.shape[1]}xHxW ({dims}), outputs {", ".join(names)}')
    if kind == 'segmentor' and cfg.model.get('test_cfg', {}).get('mode') == 'slide':
        print('note: the config tests with sliding windows; the graph runs the whole image')
    note = preprocessing_note(cfg)
    if note:
        print(note)

    result = dict(out=out, kind=kind, outputs=names, errors=[])
    if not args.verify:
        return result
    sizes = verification_sizes(height, width, args.dynamic, size_range)
    errors = compare_with_onnxruntime(model, out, sizes)
    result['errors'] = errors
    for e in errors:
        status = 'ok' if e.max_rel <= MAX_RELATIVE_ERROR else 'FAILED'
        print(f'verify {e.size[0]}x{e.size[1]} {e.name}: max abs error {e.max_abs:.3g}, '
              f'max rel error {e.max_rel:.3g} {status}')
    worst = max(e.max_rel for e in errors)
    if worst > MAX_RELATIVE_ERROR:
        sys.exit(f'error: onnxruntime differs from PyTorch by up to {worst:.3g} (relative), '
                 f'more than {MAX_RELATIVE_ERROR:g}')
    print(f'verified: onnxruntime matches PyTorch within {worst:.3g} (relative) at '
          + ', '.join(f'{h}x{w}' for h, w in sizes))
    return result


if __name__ == '__main__':
    main()
