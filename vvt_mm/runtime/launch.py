"""Make mmengine's distributed launch work without CUDA.

mmengine assumes GPUs for ``launcher='pytorch'``: ``init_dist`` calls
``torch.cuda.set_device`` and the runner wraps DDP with
``device_ids=[LOCAL_RANK]``, both invalid for CPU processes; and configs use
SyncBN, which needs CUDA. On a machine without CUDA we therefore start the
process group with gloo ourselves, give DDP ``device_ids=None`` and turn SyncBN
into BN (logged, because BN statistics are then per process), and let malloc
keep freed memory (:mod:`.allocator`). On CUDA nothing changes, so the same
command trains on a laptop and on 8 GPUs.

``launcher='slurm'`` gets the same treatment: mmengine's Slurm set-up calls
``torch.cuda.set_device``, so without CUDA we derive the rank, world size and
master address from the ``SLURM_*`` variables as mmengine does and start gloo.
"""
from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

from .allocator import keep_freed_memory


def parse_launch_args(parser: argparse.ArgumentParser,
                      argv: list[str] | None = None) -> argparse.Namespace:
    """``parser`` plus OpenMMLab's launch arguments, parsed.

    ``--launcher`` and ``--local_rank`` (``--local-rank``) are what
    ``dist_*.sh`` and ``slurm_*.sh`` pass; ``LOCAL_RANK`` defaults to the
    latter for launchers that set only the argument.
    """
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def replace_sync_bn(node: Any) -> int:
    """Replace ``type='SyncBN'`` by ``'BN'`` in a config tree; return how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value)
    return count


def slurm_dist_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` of a Slurm task, as mmengine sets them.

    ``MASTER_ADDR`` and ``MASTER_PORT`` from the environment win; otherwise the
    first host of ``SLURM_NODELIST`` (``scontrol show hostnames``) and 29500.
    """
    environ = os.environ if environ is None else environ
    try:
        rank, ntasks = environ['SLURM_PROCID'], environ['SLURM_NTASKS']
    except KeyError as err:
        raise RuntimeError(f'--launcher slurm outside a Slurm task: {err.args[0]} is not set '
                           '(start it with srun, e.g. tools/slurm_train.sh)') from None
    addr = environ.get('MASTER_ADDR')
    if not addr:
        nodes = environ.get('SLURM_NODELIST') or environ.get('SLURM_JOB_NODELIST', '')
        try:
            addr = subprocess.run(['scontrol', 'show', 'hostnames', nodes], check=True,
                                  capture_output=True, text=True).stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            raise RuntimeError(f'--launcher slurm: cannot resolve the first host of '
                               f'SLURM_NODELIST={nodes!r} with scontrol; set MASTER_ADDR'
                               ) from None
    return dict(RANK=rank, WORLD_SIZE=ntasks, LOCAL_RANK=environ.get('SLURM_LOCALID', '0'),
                MASTER_ADDR=addr, MASTER_PORT=environ.get('MASTER_PORT', '29500'))


def end_launch() -> None:
    """Destroy the default process group once a run has finished.

    mmengine leaves it to interpreter shutdown, where the backend's worker
    threads can be torn down while still running: a rank of a finished gloo
    job then aborts (``terminate called without an active exception``) and
    the launcher reports the job as failed. Local to each rank, no collective.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def prepare_launch(cfg: Config, launcher: str) -> None:
    """Adapt ``cfg`` (in place) and the process group to the available devices."""
    if torch.cuda.is_available():
        return
    kept = keep_freed_memory()
    if kept:
        print_log(f'no CUDA device: {kept}', logger='current')
    replaced = replace_sync_bn(cfg.get('model', {}))
    if replaced:
        print_log(f'no CUDA device: replaced {replaced} SyncBN layer config(s) by BN '
                  '(batch statistics are not synchronised across processes)',
                  logger='current', level=30)
    if launcher == 'none':
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if launcher == 'slurm' and not dist.is_initialized():
        os.environ.update(slurm_dist_env())
    if launcher in ('pytorch', 'slurm') and not dist.is_initialized():
        dist.init_process_group(backend='gloo', init_method='env://',
                                rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    # An explicit None stops mmengine from forcing device_ids=[LOCAL_RANK].
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    print_log(f'no CUDA device: distributed {launcher} launch on CPU with gloo',
              logger='current')
