"""Run a classifier, segmentor or detector from a config on one image.

    python tools/infer.py configs/upernet_vvt_s_ade20k.py work_dirs/x/iter_160000.pth demo.jpg \
        --out demo_seg.png
    python tools/infer.py configs/vvt_s_in1k.py vvt_small.pth demo.jpg --out demo_cls.png

The config's ``default_scope`` picks the library. Segmentation: mmseg's
visualizer overlay of the predicted classes. Classification: the top-5 labels
and scores, printed and written on the image. Detection: mmdet's boxes/masks
above ``--score-thr``.

CKPT may be a checkpoint of the whole model in OpenMMLab layout or, for
classifiers, an official checkpoint (converted on the fly). It is read with
``weights_only=True`` and must hold every tensor of the model (a classifier
layer for another class count is reported and kept): a backbone-only file or
weights of another arch are refused instead of running random weights.
"""
from __future__ import annotations

import argparse
import importlib
import os
import os.path as osp
import sys
from collections.abc import Mapping

import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from vvt_mm.checkpoint import CheckpointError, describe_load, load_whole_model
from vvt_mm.runtime import build_model_from_config, import_custom_modules

SCOPES = ('mmseg', 'mmpretrain', 'mmdet')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Run a segmentation, classification or detection model on an image '
        'and save a visualisation.')
    parser.add_argument('config', help='config file (its default_scope picks the library)')
    parser.add_argument('checkpoint', help='trained weights (OpenMMLab layout; classifiers '
                        'also accept the official VVT layout)')
    parser.add_argument('image', help='input image file')
    parser.add_argument('--out', help='where to write the visualisation (default: '
                        '<image stem>_<library>.png in the current directory)')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--topk', type=int, default=5, help='labels shown for classification')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection score threshold for drawing')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation overlay opacity in (0, 1]')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.arch=tiny')
    return parser.parse_args(argv)


def dataset_meta(cfg: Config, scope: str, checkpoint: Mapping) -> dict:
    """Class names (and palette) from the checkpoint, else from the dataset class."""
    meta = checkpoint.get('meta', {}) if isinstance(checkpoint, Mapping) else {}
    if isinstance(meta, Mapping) and isinstance(meta.get('dataset_meta'), Mapping):
        return dict(meta['dataset_meta'])
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    dataset_type = loader.get('dataset', {}).get('type')
    dataset_cls = datasets.get(dataset_type) if dataset_type else None
    return dict(getattr(dataset_cls, 'METAINFO', {}) or {})


def build_model(cfg: Config, scope: str, checkpoint_path: str, device: str):
    """Model with the checkpoint's weights (no pretrained download), in eval mode."""
    model = build_model_from_config(cfg, scope)
    report, checkpoint = load_whole_model(model, checkpoint_path)
    print('\n'.join(describe_load(report, checkpoint_path)))
    # SyncBN needs a process group in training only, but plain BN is safe everywhere.
    model = revert_sync_batchnorm(model)
    model.cfg = cfg
    model.dataset_meta = dataset_meta(cfg, scope, checkpoint)
    return model.to(device).eval()


def infer_segmentation(model: nn.Module, image: str, out: str, opacity: float) -> dict:
    from mmseg.apis import inference_model, show_result_pyplot
    if not model.dataset_meta.get('palette'):
        num = model.decode_head.num_classes
        rng = np.random.default_rng(0)
        model.dataset_meta = dict(classes=[str(i) for i in range(num)],
                                  palette=rng.integers(0, 256, (num, 3)).tolist())
    result = inference_model(model, image)
    show_result_pyplot(model, image, result, opacity=opacity, show=False, out_file=out,
                       draw_gt=False, with_labels=False)
    labels = result.pred_sem_seg.data.cpu().numpy().ravel()
    classes = model.dataset_meta['classes']
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)
    share = [(classes[ids[i]] if ids[i] < len(classes) else str(ids[i]),
              counts[i] / labels.size) for i in order]
    print('predicted classes (pixel share): ' +
          ', '.join(f'{name} {frac:.1%}' for name, frac in share[:10]))
    return dict(classes=share)


def infer_classification(model: nn.Module, image: str, out: str, topk: int) -> dict:
    from mmengine.dataset import Compose, default_collate
    from mmengine.visualization import Visualizer
    from mmpretrain.registry import TRANSFORMS
    pipeline = Compose([TRANSFORMS.build(t) for t in model.cfg.test_dataloader.dataset.pipeline])
    data = default_collate([pipeline(dict(img_path=image))])
    with torch.no_grad():
        sample = model.test_step(data)[0]
    scores = sample.pred_score.float().cpu()
    k = min(topk, scores.numel())
    values, indices = scores.topk(k)
    classes = model.dataset_meta.get('classes')
    top = [(classes[i] if classes and i < len(classes) else str(int(i)), float(v))
           for v, i in zip(values.tolist(), indices.tolist())]
    for rank, (name, score) in enumerate(top, 1):
        print(f'top-{rank}: {name} ({score:.4f})')

    rgb = mmcv.imread(image, channel_order='rgb')
    vis = Visualizer(image=rgb)
    font = max(10, min(rgb.shape[:2]) // 25)
    lines = [f'{i}. {name[:40]}: {score:.3f}' for i, (name, score) in enumerate(top, 1)]
    positions = np.array([[5, 5 + i * (font + 4)] for i in range(len(lines))])
    vis.draw_texts(lines, positions, colors='white', font_sizes=font,
                   bboxes=[dict(facecolor='black', alpha=0.6, pad=1,
                                edgecolor='none')] * len(lines))
    mmcv.imwrite(vis.get_image()[..., ::-1], out)
    return dict(topk=top)


def infer_detection(model: nn.Module, image: str, out: str, score_thr: float) -> dict:
    from mmdet.apis import inference_detector
    from mmdet.visualization import DetLocalVisualizer
    result = inference_detector(model, image)
    vis = DetLocalVisualizer()
    vis.dataset_meta = model.dataset_meta
    vis.add_datasample('result', mmcv.imread(image, channel_order='rgb'), result,
                       draw_gt=False, pred_score_thr=score_thr, out_file=out)
    keep = result.pred_instances.scores >= score_thr
    print(f'{int(keep.sum())} detections with score >= {score_thr}')
    return dict(num_detections=int(keep.sum()))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint'),
                       (args.image, 'image')):
        if not osp.isfile(path):
            sys.exit(f'error: {what} file {path!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        sys.exit(f'error: {args.config} has default_scope={scope!r}; infer.py handles '
                 f'{SCOPES}')
    import_custom_modules(cfg)
    init_default_scope(scope)
    out = args.out or f'{osp.splitext(osp.basename(args.image))[0]}_{scope}.png'
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    try:
        model = build_model(cfg, scope, args.checkpoint, args.device)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        sys.exit(f'error: tools/infer.py: {err}')
    if scope == 'mmseg':
        result = infer_segmentation(model, args.image, out, args.opacity)
    elif scope == 'mmpretrain':
        result = infer_classification(model, args.image, out, args.topk)
    else:
        result = infer_detection(model, args.image, out, args.score_thr)
    print(f'visualisation written to {out}')
    result['out'] = out
    return result


if __name__ == '__main__':
    main()
