"""Test (evaluate) a checkpoint of an mmsegmentation, mmdetection or mmpretrain model.

    python tools/test.py CONFIG CKPT [--eval mIoU] [--work-dir DIR]
    bash tools/dist_test.sh CONFIG CKPT GPUS [--eval mIoU]

``--eval`` keeps the mm 0.x habit: it replaces the config's test evaluator
(mIoU/mDice/mFscore, bbox/segm, accuracy). Metrics are printed as a table.

CKPT must hold the whole model: a backbone-only file, an official ImageNet
checkpoint given to a segmentor, or weights of another arch are refused (they
would score random weights). An official classifier checkpoint is converted.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.dist import get_rank, get_world_size
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

import vvt_mm  # noqa: F401
from vvt_mm.checkpoint import (
    CheckpointError,
    check_whole_model,
    read_checkpoint,
    whole_model_state_dict,
)
from vvt_mm.engine import (
    DatasetLayoutError,
    SampleLoadError,
    check_dataset_layout,
    enable_safe_resume,
    enable_sample_error_context,
)
from vvt_mm.runtime import (
    PeerWatch,
    apply_eval_metrics,
    end_launch,
    exit_with_error,
    load_config,
    parse_launch_args,
    prepare_launch,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go')
    parser.add_argument('--eval', nargs='+', metavar='METRIC',
                        help='metrics, e.g. mIoU (segmentation), bbox segm (detection), '
                        'accuracy (classification)')
    parser.add_argument('--out', help='dump raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='save visualised predictions here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parse_launch_args(parser, argv)


def format_metrics(metrics: dict) -> str:
    """Metrics as an aligned two-column table."""
    width = max([len('metric'), *(len(k) for k in metrics)])
    rows = [f'{"metric":<{width}}  value', f'{"-" * width}  -----']
    for key, value in metrics.items():
        shown = f'{value:.4f}' if isinstance(value, float) else str(value)
        rows.append(f'{key:<{width}}  {shown}')
    return '\n'.join(rows)


def load_whole_checkpoint(runner: Runner, path: str) -> None:
    """Refuse a checkpoint that lacks part of the model; convert an official one.

    mmengine itself would load ``load_from`` with ``strict=False`` and evaluate
    whatever stayed random. A checkpoint in OpenMMLab layout is still loaded by
    the runner (so hooks such as ``EMAHook`` see it); an official one is
    converted and loaded here.
    """
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    try:
        checkpoint = read_checkpoint(path)
        state_dict, layout = whole_model_state_dict(model, checkpoint)
        report = check_whole_model(model, state_dict, path, layout)
    except CheckpointError as err:
        sys.exit(f'error: tools/test.py: {err}')
    for key, theirs, ours in report.shape_mismatch:
        runner.logger.warning(f'{path}: {key} has shape {theirs}, the model {ours} (another '
                              'class count): that layer keeps its initialisation')
    if layout != 'OpenMMLab':
        model.load_state_dict({k: v for k, v in state_dict.items() if k in report.matched},
                              strict=False)
        runner.logger.info(f'{path}: {layout} checkpoint converted and loaded '
                           f'({len(report.matched)} tensors)')
        runner._load_from = None  # loaded; keep the runner from loading it unconverted


def test(runner: Runner) -> dict:
    """``runner.test()``; a bad sample or a dead rank becomes one ``error:`` line."""
    with PeerWatch.watching() as peers:
        try:
            return runner.test()
        except SampleLoadError as err:
            exit_with_error((f'rank {get_rank()}: ' if get_world_size() > 1 else '')
                            + err.summary)
        except Exception as err:
            message = peers.explain(err) if peers is not None else None
            if message is None:
                raise
            exit_with_error(message)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if not args.checkpoint.startswith(('http://', 'https://')) and \
            not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint {args.checkpoint!r} does not exist')
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.eval:
        try:
            apply_eval_metrics(cfg, args.eval)
        except ValueError as err:
            sys.exit(f'error: {err}')
    if args.out:
        cfg.test_evaluator = [*(cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                                else [cfg.test_evaluator]),
                              dict(type='DumpResults', out_file_path=args.out)]
    if args.show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is not None:
            vis.update(draw=True, show=False)
            cfg.visualizer.save_dir = args.show_dir

    # A wrong dataset folder fails now, with the expected layout; checkpoints are
    # read under weights_only=True (torch >= 2.6) with mmengine's allowlist.
    try:
        check_dataset_layout(cfg, ('test_dataloader',))
    except DatasetLayoutError as err:
        sys.exit(f'error: {err}')
    enable_safe_resume()
    enable_sample_error_context()

    prepare_launch(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    load_whole_checkpoint(runner, args.checkpoint)
    metrics = test(runner)
    if get_rank() == 0:
        print(format_metrics(metrics), flush=True)
    end_launch()


if __name__ == '__main__':
    main()
