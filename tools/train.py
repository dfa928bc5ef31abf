"""Train a model of mmsegmentation, mmdetection or mmpretrain from a config.

The config's ``default_scope`` picks the library; ``custom_imports`` in the
config (or ``import vvt_mm`` here) registers our backbones. Without CUDA the
same command runs with gloo on CPU (see ``vvt_mm.runtime.launch``).

A run that cannot go on ends with one ``error:`` line (also in torchrun's
summary) instead of a traceback: a non-finite loss (``NonFiniteLossHook``), a
sample that cannot be loaded (the file is named), a rank that died (the
survivors name it), ranks that would resume from different iterations.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
    bash tools/dist_train.sh CONFIG GPUS [args...]
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.dist import get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.runner import Runner

import vvt_mm  # noqa: F401  (registers the backbones even without custom_imports)
from vvt_mm.engine import (
    DatasetLayoutError,
    NonFiniteLossError,
    ResumeMismatchError,
    SampleLoadError,
    add_compile_hook,
    check_dataset_layout,
    enable_atomic_checkpoints,
    enable_safe_resume,
    enable_sample_error_context,
)
from vvt_mm.runtime import (
    PeerWatch,
    end_launch,
    exit_with_error,
    load_config,
    parse_launch_args,
    prepare_launch,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint in the work '
                        'dir when no path is given')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=100')
    return parse_launch_args(parser, argv)


def enable_amp(cfg: Config) -> None:
    """``--amp``: fp16 with dynamic loss scaling on CUDA, bf16 autocast on a CPU.

    mmengine's ``AmpOptimWrapper`` refuses to run without an accelerator.
    """
    wrapper = cfg.optim_wrapper
    if wrapper.get('type') in ('AmpOptimWrapper', 'CPUAutocastOptimWrapper'):
        return
    if torch.cuda.is_available():
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
        return
    wrapper.type = 'CPUAutocastOptimWrapper'
    wrapper.pop('loss_scale', None)
    print_log('--amp without CUDA: training under bf16 autocast on the CPU '
              '(CPUAutocastOptimWrapper; no loss scaling needed)', logger='current')


def train(runner: Runner) -> None:
    """``runner.train()``; the errors that end a run cleanly become one ``error:`` line."""
    prefix = f'rank {get_rank()}: ' if get_world_size() > 1 else ''
    with PeerWatch.watching() as peers:
        try:
            runner.train()
        except (NonFiniteLossError, ResumeMismatchError) as err:
            # Every rank stops at the same point with the same message.
            exit_with_error(str(err), show=get_rank() == 0)
        except SampleLoadError as err:
            exit_with_error(prefix + err.summary)
        except Exception as err:
            message = peers.explain(err) if peers is not None else None
            if message is None:
                raise
            last = runner.message_hub.get_info('last_ckpt')
            exit_with_error(message + (f' The last checkpoint is {last} (continue with '
                                       '--resume).' if last else ''))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    # Fail now, with the expected layout, on a wrong dataset folder; resume mmengine
    # checkpoints under weights_only=True (torch >= 2.6); write checkpoints
    # atomically so a kill while saving leaves no truncated file.
    try:
        check_dataset_layout(cfg, ('train_dataloader', 'val_dataloader'))
    except DatasetLayoutError as err:
        sys.exit(f'error: {err}')
    enable_safe_resume()
    enable_atomic_checkpoints()
    enable_sample_error_context()
    add_compile_hook(cfg)  # compile=...: optimizer param groups dynamo can trace

    prepare_launch(cfg, args.launcher)
    train(Runner.from_cfg(cfg))
    end_launch()


if __name__ == '__main__':
    main()
