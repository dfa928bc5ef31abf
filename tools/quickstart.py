"""The README's main job: train and evaluate a small VVT UPerNet end to end.

1. writes a tiny ADE20K-layout dataset (:func:`vvt_mm.testing.make_tiny_ade20k`);
2. derives a small config from ``configs/upernet_vvt_t_ade20k.py`` -- same
   model family and pipeline, but random init, small crops, narrow heads and a
   few dozen iterations -- and saves it next to the run;
3. runs ``tools/dist_train.sh`` with 2 processes (GPUs if present, else CPU
   processes with gloo) and ``tools/dist_test.sh ... --eval mIoU``;
4. prints the metrics and the IoU of the classes that occur in the data.

The launchers' full output goes to ``train.log`` / ``test.log`` in the work
dir; the console shows one line per logged iteration and the result.

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--iters 40] [--gpus 2]
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import re
import subprocess
import sys
import time

import numpy as np
from mmengine.config import Config
from PIL import Image

from vvt_mm.testing import make_tiny_ade20k

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

BASE_CONFIG = osp.join(ROOT, 'configs', 'upernet_vvt_t_ade20k.py')


def tiny_config(data_root: str, iters: int, crop: int = 64) -> Config:
    """The real VVT-T UPerNet config, shrunk to run in minutes on 2 CPU cores."""
    cfg = Config.fromfile(BASE_CONFIG)
    cfg.model.backbone.init_cfg = None  # no download: random init
    cfg.model.backbone.drop_path_rate = 0.0
    cfg.model.data_preprocessor.size = (crop, crop)
    cfg.model.decode_head.channels = 32
    cfg.model.auxiliary_head.channels = 16
    scale = (2 * crop, crop)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=scale, ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(crop, crop), cat_max_ratio=0.9),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]
    for split, loader in (('training', 'train_dataloader'), ('validation', 'val_dataloader'),
                          ('validation', 'test_dataloader')):
        dl = cfg[loader]
        dl.batch_size = 2 if split == 'training' else 1
        dl.num_workers = 0
        dl.persistent_workers = False
        dl.dataset.data_root = data_root
        dl.dataset.data_prefix = dict(img_path=f'images/{split}',
                                      seg_map_path=f'annotations/{split}')
        dl.dataset.pipeline = train_pipeline if split == 'training' else test_pipeline
    # A few dozen steps only learn something with a larger step than 6e-5.
    cfg.optim_wrapper.optimizer.lr = 1e-3
    warmup = max(1, iters // 8)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup),
        dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup, end=iters),
    ]
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.default_hooks.logger.interval = max(1, iters // 8)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=iters, max_keep_ckpts=1)
    cfg.randomness = dict(seed=0)
    return cfg


_ITER = re.compile(r'Iter\((train|test)\) \[\s*(\d+)/(\d+)\](?:.*?\sloss: ([\d.]+))?')
_CLASS_ROW = re.compile(r'^\|\s*(.+?)\s*\|\s*([\d.]+|nan)\s*\|\s*([\d.]+|nan)\s*\|$')
_METRIC_ROW = re.compile(r'^(aAcc|mIoU|mAcc|mDice|mFscore)\s+([\d.]+)$')


def run(cmd: list[str], env: dict, log_path: str, start: float) -> list[str]:
    """Run ``cmd`` with its output in ``log_path``; print its progress; return its lines."""
    print(f'$ {" ".join(cmd)}\n  (full output: {log_path})', flush=True)
    lines = []
    with open(log_path, 'w') as log, subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip('\n'))
            match = _ITER.search(line)
            if match:
                phase, step, total, loss = match.groups()
                shown = f'  loss {float(loss):.3f}' if loss else ''
                print(f'  {phase} {int(step):>3}/{total}{shown}  ({time.time() - start:.0f} s)',
                      flush=True)
    if proc.returncode:
        print('\n'.join(lines[-40:]), file=sys.stderr)
        sys.exit(f'error: {cmd[1]} failed (exit {proc.returncode}); last lines above, all '
                 f'of them in {log_path}')
    return lines


def classes_in_data(data_root: str, split: str = 'validation') -> set[int]:
    """Class indices present in the label maps (after ``reduce_zero_label``)."""
    present = set()
    for path in glob.glob(osp.join(data_root, 'annotations', split, '*.png')):
        present.update(int(v) - 1 for v in np.unique(np.asarray(Image.open(path))) if v)
    return present


def summarize(test_lines: list[str], class_names: tuple, present: set[int]) -> str:
    """The metrics and the per-class rows of the classes that occur in the data."""
    wanted = {class_names[i] for i in present if i < len(class_names)}
    metrics = [m.groups() for m in map(_METRIC_ROW.match, test_lines) if m]
    rows = [m.groups() for m in map(_CLASS_ROW.match, test_lines)
            if m and m.group(1) in wanted]
    out = ['result (validation split): ' + '  '.join(f'{k} {float(v):.2f}' for k, v in metrics)]
    if rows:
        width = max(len(name) for name, _, _ in rows)
        out.append(f'  {"class":<{width}}    IoU    Acc   (the {len(rows)} classes in the data)')
        out += [f'  {name:<{width}}  {iou:>5}  {acc:>5}' for name, iou, acc in rows]
    return '\n'.join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'quickstart'))
    parser.add_argument('--iters', type=int, default=40)
    parser.add_argument('--gpus', type=int, default=2, help='processes (GPUs or CPU)')
    parser.add_argument('--port', default=os.environ.get('PORT', '29511'))
    args = parser.parse_args()

    start = time.time()
    work_dir = osp.abspath(args.work_dir)
    data_root = make_tiny_ade20k(osp.join(work_dir, 'tiny_ade20k'))
    cfg = tiny_config(data_root, args.iters)
    config_path = osp.join(work_dir, 'upernet_vvt_t_tiny_ade20k.py')
    cfg.dump(config_path)
    print(f'dataset: {data_root}\nconfig:  {config_path}', flush=True)

    env = dict(os.environ, PYTHON=sys.executable, PORT=str(args.port))
    run(['bash', 'tools/dist_train.sh', config_path, str(args.gpus), '--work-dir', work_dir],
        env, osp.join(work_dir, 'train.log'), start)
    checkpoint = osp.join(work_dir, f'iter_{args.iters}.pth')
    test_lines = run(['bash', 'tools/dist_test.sh', config_path, checkpoint, str(args.gpus),
                      '--eval', 'mIoU', '--work-dir', work_dir], env,
                     osp.join(work_dir, 'test.log'), start)
    from mmseg.datasets import ADE20KDataset
    print(summarize(test_lines, ADE20KDataset.METAINFO['classes'], classes_in_data(data_root)))
    print(f'quickstart finished in {time.time() - start:.0f} s; checkpoint {checkpoint}, '
          f'logs in {work_dir}')


if __name__ == '__main__':
    main()
