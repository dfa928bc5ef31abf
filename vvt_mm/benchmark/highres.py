"""Backbones at Cityscapes' whole-image size (1024x2048): time and peak memory.

VVT-S, PVTv2-b2 and Swin-T, inference (no grad) and training (forward +
backward of the outputs' means), each also with activation checkpointing
(``with_cp``: VVT's and Swin's own flag; mmdet's PVTv2 has none, so its
encoder layers are wrapped in ``torch.utils.checkpoint`` here). ``with_cp``
changes training only, so those variants are timed and measured for training.

At this size one call takes seconds to tens of seconds on one CPU thread,
so each case is timed once after an untimed warm-up at a quarter of the side;
peak memory comes from a fresh process with malloc pinned from the start
(:func:`~vvt_mm.benchmark.measurement.fresh_process_memory`), whose slow
timings are not used.
"""
from __future__ import annotations

import argparse
import subprocess
import warnings
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .measurement import Meter, Row, forward_backward, fresh_process_memory
from .suites import Progress, backbone_builders

__all__ = ['HIGHRES_MODELS', 'highres_builders', 'highres_suite']

HIGHRES_MODELS = ('VVT-S', 'PVTv2-b2', 'Swin-T', 'VVT-S(with_cp)', 'PVTv2-b2(with_cp)',
                  'Swin-T(with_cp)')


class _Checkpointed(nn.Module):
    """A block whose activations are recomputed in backward (``with_cp`` from outside)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args):
        if torch.is_grad_enabled():
            return cp.checkpoint(self.block, *args, use_reentrant=False)
        return self.block(*args)


def _pvt_with_cp() -> nn.Module:
    model = backbone_builders()['PVTv2-b2']()
    for stage in model.layers:  # [patch_embed, ModuleList(encoder layers), norm]
        blocks = stage[1]
        for i, block in enumerate(blocks):
            blocks[i] = _Checkpointed(block)
    return model


def _swin_with_cp() -> nn.Module:
    from mmseg.models.backbones import SwinTransformer
    model = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                            window_size=7, with_cp=True)
    # mmseg's Swin calls checkpoint() without use_reentrant (torch warns on every call).
    warnings.filterwarnings('ignore', message='torch.utils.checkpoint: the use_reentrant')
    return model


def highres_builders() -> dict[str, Callable[[], nn.Module]]:
    base = backbone_builders()
    return {'VVT-S': base['VVT-S'], 'PVTv2-b2': base['PVTv2-b2'], 'Swin-T': base['Swin-T'],
            'VVT-S(with_cp)': base['VVT-S(with_cp)'], 'PVTv2-b2(with_cp)': _pvt_with_cp,
            'Swin-T(with_cp)': _swin_with_cp}


def _measure(name: str, build: Callable[[], nn.Module], hw: tuple[int, int],
             args: argparse.Namespace, meter: Meter, progress: Progress) -> Row:
    height, width = hw
    row = Row('highres', name, height, (height // 4) * (width // 4), args.highres_batch,
              note=f'{height}x{width}')
    try:
        model = build().to(meter.device)
        model.train()  # mmseg's Swin returns None from train()
    except (ImportError, ModuleNotFoundError) as err:
        row.note = f'unavailable: {err}'[:100]
        return row
    params = [p for p in model.parameters() if p.requires_grad]
    train_only = '(with_cp)' in name
    if train_only and args.highres_inference_only:
        row.note += '; skipped: --highres-inference-only'
        return row
    trains = not args.highres_inference_only

    def clear() -> None:
        for p in params:
            p.grad = None

    def call_at(h: int, w: int, train: bool) -> Callable[[], None]:
        img = torch.randn(args.highres_batch, 3, h, w,
                          generator=torch.Generator().manual_seed(0)).to(meter.device)

        def run() -> None:
            # Every call starts without gradients, so a training step's peak
            # always includes allocating them.
            try:
                if train:
                    forward_backward(partial(model, img))
                else:
                    with torch.no_grad():
                        model(img)
            finally:
                clear()
        return run

    progress(f'highres {name} @ {height}x{width}: warm-up at a quarter side')
    for train in (False, True)[:2 if trains else 1]:  # thread pools, caches, lazy init
        call_at(max(height // 4, 64), max(width // 4, 64), train)()
    fwd, train = call_at(height, width, False), call_at(height, width, True)
    # Memory in this process: the child of a fresh-process reading, on CUDA
    # (its allocator's peak is exact), or when asked to stay inline.
    inline_memory = args.memory_only or not (meter.device.type == 'cpu' and
                                             args.backbone_memory == 'subprocess')
    try:
        if not args.memory_only:
            progress(f'highres {name} @ {height}x{width}')
            if not train_only:
                row.fwd_ms = meter.timed(fwd)
            if trains:
                row.fwd_bwd_ms = meter.timed(train)
        if inline_memory:
            if not train_only:
                row.fwd_mem_mb = meter.memory.measure(fwd)
            if trains:
                row.train_mem_mb = meter.memory.measure(train)
    except (RuntimeError, MemoryError) as err:
        row.note = f'failed: {str(err).splitlines()[0][:80]}'
    clear()
    return row


def highres_suite(args: argparse.Namespace, meter: Meter, progress: Progress) -> list[Row]:
    """Time (here) and peak memory (fresh processes on CPU) of every high-res case.

    One child process per model, or one for all of them with ``--quick``
    (interpreter start-up and imports cost ~8 s per child on 2 cores).
    """
    hw = tuple(args.highres_size)
    names = [n for n in highres_builders() if not args.highres_models or
             n in args.highres_models]
    builders = highres_builders()
    rows = [_measure(name, builders[name], hw, args, meter, progress) for name in names]
    if args.memory_only or not (meter.device.type == 'cpu' and
                                args.backbone_memory == 'subprocess'):
        return rows
    todo = [r for r in rows if not r.note.startswith(('unavailable', 'failed')) and
            'skipped' not in r.note]
    _release_heap()  # the children's peaks would otherwise add to this process's cache
    groups = [todo] if args.quick else [[r] for r in todo]
    for group in groups:
        progress(f'highres {", ".join(r.name for r in group)}: memory in a fresh process')
        cli_args = ['--device', 'cpu', '--suites', 'highres', '--highres-models',
                    *[r.name for r in group], '--highres-size', str(hw[0]), str(hw[1]),
                    '--highres-batch', str(args.highres_batch), '--threads',
                    str(args.threads)]
        if args.highres_inference_only:
            cli_args.append('--highres-inference-only')
        try:
            children = {c['name']: c for c in fresh_process_memory(cli_args)}
        except (subprocess.SubprocessError, ValueError) as err:
            for row in group:
                row.note += f'; memory: none (fresh process failed: {type(err).__name__})'
            continue
        for row in group:
            child = children[row.name]
            row.fwd_mem_mb, row.train_mem_mb = child['fwd_mem_mb'], child['train_mem_mb']
            row.note += '; memory: fresh process'
    return rows


def _release_heap() -> None:
    """Hand this process's freed heap back to the kernel (glibc keeps it cached).

    After the timed 1024x2048 cases it held ~7 GiB, and a child measuring
    PVTv2-b2's training peak (~12 GiB) then exhausted a 23 GiB machine.
    """
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        pass
