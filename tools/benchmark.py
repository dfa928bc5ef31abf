"""Speed and memory of vicinity attention and of whole backbones, as ratios.

One run prints three tables and writes ``results.csv``, ``summary.txt`` and
``benchmark.png`` (throughput and memory against resolution, the paper's
Fig. 8 / Fig. 11 style) into ``--out``:

* ``core``: the attention core alone (``B x heads x N x d`` tensors), our
  separable path (and the Triton kernel on CUDA) against the official
  ``N x 4d`` formulation.
* ``attention``: every token mixer registered in ``vvt_mm.registry.ATTENTIONS``
  at equal dims (the paper's Fig. 8 setting: 128 channels, one head), plus
  VVT's attention with the reference core and with ``sr_ratio=4`` (VVT_sr),
  and PVTv2's spatial reduction at its stage-1 ratio 8. Softmax attention runs
  through ``F.scaled_dot_product_attention``; quadratic mixers are skipped
  above ``--max-quadratic-tokens``.
* ``backbone``: VVT-S (ours, reference core, VVT_sr, ``with_cp``) against
  PVTv2-b2 (mmdet ``PyramidVisionTransformerV2``) and Swin-T (mmseg).

Time is the best of a few calls after one warm-up (the minimum is the least
disturbed by other processes on a shared machine); calls slower than 3 s are
not repeated. On CPU with one thread (the default) the clock is the calling
thread's CPU time, so time spent waiting for a core held by another process
is not counted (``--clock wall`` to change). Peak memory is what the
measured call adds on top of what already exists (model, inputs):

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
* CPU: torch has no CPU allocator statistics, so the resident set is used:
  for the measured call glibc's mmap threshold is pinned to 64 KiB
  (``mallopt``) so freed tensors go back to the kernel at once, cached free
  heap pages are released (``malloc_trim``), ``5`` is written to
  ``/proc/self/clear_refs`` (``VmHWM`` := ``VmRSS``), and the peak is
  ``VmHWM`` after minus ``VmRSS`` before. This counts every byte torch,
  oneDNN and MKL touch, at page granularity. Timed calls run with malloc
  keeping memory (the pin would slow them several times). After many large
  models that in-process reading drifts (whole-backbone inference peaks read
  up to 2x high), so each backbone case is measured again in a fresh child
  process pinned from the start (``--backbone-memory subprocess``, the
  default; the table notes it).

Two bounds are printed next to the issue's checks: the separable core's
batched GEMMs alone (``GEMMs only (floor)``: no implementation of that form
beats it on the same BLAS) and the share of a VVT-S forward spent in the
attention cores (a faster core cannot speed the backbone up by more than
``1 / (1 - share)``).

Example::

    python tools/benchmark.py --threads 1               # full sweep (CPU: ~20 min)
    python tools/benchmark.py --quick --out /tmp/bench  # smoke test, seconds
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vvt_mm.models.attention.builder import attention_names, build_attention  # noqa: E402
from vvt_mm.models.attention.vicinity_dispatch import triton_available  # noqa: E402
from vvt_mm.ops.vicinity_reference import vicinity_attention_reference  # noqa: E402
from vvt_mm.ops.vicinity_separable import vicinity_attention_separable  # noqa: E402

MB = 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


# --------------------------------------------------------------------------- memory
class PeakMemory:
    """Extra peak memory of one call, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device, pinned: bool = False) -> None:
        self.device = device
        self.pinned = pinned and device.type == 'cpu'
        if self.pinned:  # whole process: exact memory, slower timings
            ctypes.CDLL('libc.so.6').mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        self.available = device.type == 'cuda' or os.access('/proc/self/clear_refs',
                                                             os.W_OK)

    @staticmethod
    def _status(key: str) -> int:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
        raise ValueError(key)

    def measure(self, fn: Callable[[], object]) -> float:
        if not self.available:
            return float('nan')
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / MB
        return self._measure_cpu(fn)

    def _measure_cpu(self, fn: Callable[[], object]) -> float:
        """Run ``fn`` once with malloc returning every freed block at once.

        During the call glibc's mmap threshold is pinned to 64 KiB, so RSS
        follows live memory; the pin makes allocations fault in fresh pages
        (several times slower), so afterwards malloc is switched to keeping
        memory (32 MiB mmap threshold, 256 MiB trim threshold, glibc's own
        steady state) for the timed calls.
        """
        libc = ctypes.CDLL('libc.so.6')
        if self.pinned:
            base = self._status('VmRSS')
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            fn()
            return (self._status('VmHWM') - base) / MB
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)  # cached free heap pages would hide reuse
        try:
            base = self._status('VmRSS')
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # VmHWM := VmRSS
            fn()
            return (self._status('VmHWM') - base) / MB
        finally:
            libc.mallopt(M_MMAP_THRESHOLD, 32 * MB)
            libc.mallopt(M_TRIM_THRESHOLD, 256 * MB)


# Clock of every measurement: wall time, or (CPU, one thread) the CPU time of
# the calling thread -- see ``--clock``.
CLOCK: Callable[[], float] = time.perf_counter


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Time of one call in ms (synchronised on CUDA)."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = CLOCK()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (CLOCK() - start) * 1e3


def time_and_memory(fn: Callable[[], object], device: torch.device, mem: PeakMemory,
                    repeats: int, warm: bool = False,
                    budget_ms: float = 3000.0) -> tuple[float, float]:
    """Best time (ms) over warmed-up calls, and the peak memory (MiB) of one call.

    One warm-up call (skipped when ``warm``: the same kernels already ran),
    then timed calls while the total stays under ``budget_ms`` (at least one,
    at most ``repeats + 1``), then one call measured for memory.
    """
    spent = 0.0 if warm else timed(fn, device)
    best = float('inf')
    for i in range(repeats + 1):
        if i and spent > budget_ms:
            break
        took = timed(fn, device)
        best, spent = min(best, took), spent + took
    return best, mem.measure(fn)


@dataclass
class Row:
    suite: str
    name: str
    size: int  # image side (attention: side / 4 tokens per side); core: token side
    tokens: int
    batch: int
    fwd_ms: float = float('nan')
    fwd_bwd_ms: float = float('nan')
    fwd_mem_mb: float = float('nan')
    train_mem_mb: float = float('nan')
    note: str = ''
    extra: dict = field(default_factory=dict)


def forward_backward(forward: Callable[[], torch.Tensor | tuple]) -> None:
    """One training step's compute: ``forward`` then backward of the outputs' means."""
    out = forward()
    outs = out if isinstance(out, (tuple, list)) else (out, )
    sum(o.float().mean() for o in outs).backward()


def run_case(row: Row, forward: Callable[[], torch.Tensor | tuple], params: list,
             inputs: list[torch.Tensor], device: torch.device, mem: PeakMemory,
             repeats: int, train: bool = True, memory_only: bool = False) -> Row:
    """Times ``forward`` (no grad) and forward+backward, and their peak memory.

    ``memory_only``: one warm-up call then the memory call, no timing (the
    child process of :func:`memory_in_fresh_process`).
    """

    def clear_grads() -> None:
        for t in [*params, *inputs]:
            t.grad = None

    def fwd() -> None:
        with torch.no_grad():
            forward()

    def fwd_bwd() -> None:
        clear_grads()
        forward_backward(forward)

    if memory_only:
        for name, fn in (('fwd_mem_mb', fwd), ('train_mem_mb', fwd_bwd)):
            fn()
            setattr(row, name, mem.measure(fn))
        clear_grads()
        return row
    try:
        row.fwd_ms, row.fwd_mem_mb = time_and_memory(fwd, device, mem, repeats)
        if train:
            # A slow forward has warmed up every kernel the backward needs too.
            row.fwd_bwd_ms, row.train_mem_mb = time_and_memory(
                fwd_bwd, device, mem, repeats, warm=row.fwd_ms > 3000)
            clear_grads()
    except (RuntimeError, MemoryError) as err:  # e.g. CUDA OOM: record and go on
        row.note = f'failed: {str(err).splitlines()[0][:80]}'
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return row


# --------------------------------------------------------------------------- suites
def core_suite(args, device, mem, progress) -> list[Row]:
    rows = []
    impls = {'ours(torch)': vicinity_attention_separable, 'reference': vicinity_attention_reference}
    probe = torch.empty(1, device=device)
    if triton_available(probe):
        from vvt_mm.ops.vicinity_triton import vicinity_attention_triton
        impls['ours(triton)'] = vicinity_attention_triton
    for side in args.core_sizes:
        gen = torch.Generator().manual_seed(0)
        shape = (args.core_batch, args.core_heads, side * side, args.core_dim)
        q, k, v = (torch.randn(shape, generator=gen).to(device).requires_grad_()
                   for _ in range(3))
        for name, fn in impls.items():
            progress(f'core {name} {side}x{side} tokens')
            row = Row('core', name, side, side * side, args.core_batch)
            call = partial(fn, q, k, v, (side, side))
            rows.append(run_case(row, call, [], [q, k, v], device, mem, args.repeats))
        progress(f'core GEMM floor {side}x{side} tokens')
        rows.append(gemm_floor(side, args, device))
    return rows


GEMM_FLOOR = 'GEMMs only (floor)'


def gemm_floor(side: int, args, device: torch.device) -> Row:
    """Time of the separable core's batched GEMMs alone, on whole maps.

    Forward is four ``2 N d (d+1)``-flop products (row and column sums of
    ``k [v|1]^T``, then ``q`` times the per-row and per-column matrices) and
    backward eight (their transposes, for ``q``, the state, ``k`` and ``v``).
    No implementation of the separable form can beat this row on the same BLAS;
    the reference divided by it bounds the speed-up reachable here.
    """
    groups, dim = args.core_batch * args.core_heads, args.core_dim
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device)

    by_row = [rand(groups, side, side, dim) for _ in range(2)] + [
        rand(groups, side, side, dim + 1) for _ in range(2)]  # q|k, [v|1]
    by_col = [t.transpose(1, 2).contiguous() for t in by_row]
    mats = rand(groups, side, dim, dim + 1)

    def forward() -> None:
        for q, k, v, _ in (by_row, by_col):
            k.transpose(-2, -1) @ v
            q @ mats

    def backward() -> None:
        for q, k, v, g in (by_row, by_col):
            g @ mats.transpose(-2, -1)  # d q
            q.transpose(-2, -1) @ g  # d state
            v @ mats.transpose(-2, -1)  # d k
            k @ mats[..., :dim]  # d v

    def all_twelve() -> None:
        forward()
        backward()

    row = Row('core', GEMM_FLOOR, side, side * side, args.core_batch)
    all_twelve()  # untimed: the first call pays for BLAS set-up
    tries = max(args.repeats, 2) + 1  # a single cold-ish sample can invert fwd vs fwd+bwd
    row.fwd_ms = min(timed(forward, device) for _ in range(tries))
    row.fwd_bwd_ms = min(timed(all_twelve, device) for _ in range(tries))
    row.note = 'bound, not an implementation'
    return row


def mixer_configs(args) -> dict[str, dict]:
    """Every registered token mixer (one name per class) plus VVT variants."""
    cfgs = {}
    for _, aliases in sorted(attention_names().items()):
        name = sorted(aliases, key=lambda n: (n[:1].isupper(), len(n)))[0]
        cfgs[name] = dict(type=name)
    cfgs['vicinity'] = dict(type='vicinity', impl='auto')
    cfgs['vicinity(reference)'] = dict(type='vicinity', impl='reference')
    cfgs['vicinity_sr4(VVT_sr)'] = dict(type='vicinity', sr_ratio=4)
    if 'spatial_reduction' in cfgs:
        cfgs['spatial_reduction'] = dict(type='spatial_reduction', sr_ratio=8)  # PVTv2 stage 1
    return cfgs


QUADRATIC = {'softmax'}


def attention_suite(args, device, mem, progress) -> list[Row]:
    rows = []
    cfgs = mixer_configs(args)
    for size in args.attn_sizes:
        side = size // 4
        tokens = side * side
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.attn_batch, tokens, args.attn_dims, generator=gen)
        x = x.to(device).requires_grad_()
        for name, cfg in cfgs.items():
            progress(f'attention {name} @ {size}px ({side}x{side} tokens)')
            row = Row('attention', name, size, tokens, args.attn_batch)
            if cfg['type'] in QUADRATIC and tokens > args.max_quadratic_tokens:
                row.note = f'skipped: O(N^2) above {args.max_quadratic_tokens} tokens'
                rows.append(row)
                continue
            try:
                module = build_attention(dict(cfg), embed_dims=args.attn_dims,
                                         num_heads=args.attn_heads).to(device)
            except (TypeError, ValueError, KeyError) as err:
                row.note = f'not built with defaults: {err}'[:100]
                rows.append(row)
                continue
            call = partial(module, x, (side, side))
            rows.append(run_case(row, call, list(module.parameters()), [x], device, mem,
                                 args.repeats))
            del module
    return rows


def backbone_builders() -> dict[str, Callable[[], nn.Module]]:
    from vvt_mm.models.backbones.vvt import VVT

    def pvtv2_b2() -> nn.Module:
        # mmdet configs/pvt/retinanet_pvtv2-b2_fpn_1x_coco.py
        from mmdet.models.backbones import PyramidVisionTransformerV2
        return PyramidVisionTransformerV2(embed_dims=64, num_layers=[3, 4, 6, 3])

    def swin_t() -> nn.Module:
        # mmseg configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k
        from mmseg.models.backbones import SwinTransformer
        return SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                               window_size=7)

    return {
        'VVT-S': lambda: VVT('small'),
        'VVT-S(reference)': lambda: VVT('small', attn_cfg=dict(type='vicinity',
                                                               impl='reference')),
        'VVT-S_sr4(VVT_sr)': lambda: VVT('small', sr_ratios=(4, 4, 4, 4)),
        'VVT-S(with_cp)': lambda: VVT('small', with_cp=True),
        'PVTv2-b2': pvtv2_b2,
        'Swin-T': swin_t,
    }


BACKBONES = ('VVT-S', 'VVT-S(reference)', 'VVT-S_sr4(VVT_sr)', 'VVT-S(with_cp)', 'PVTv2-b2',
             'Swin-T')


def backbone_suite(args, device, mem, progress) -> list[Row]:
    rows = []
    warmed = False
    for name, build in backbone_builders().items():
        if args.backbones and name not in args.backbones:
            continue
        if not warmed and args.backbone_sizes and not args.memory_only:
            # The first model timed in a process ran ~20% slower at 512^2 than
            # the same computation timed later (thread pools, kernel caches and
            # the heap warming up); one untimed throw-away round evens it out.
            progress('backbone warm-up (untimed)')
            warm_up_process(build, min(args.backbone_sizes), args.backbone_batch, device)
            warmed = True
        try:
            model = build().to(device)
        except (ImportError, ModuleNotFoundError) as err:
            rows += [Row('backbone', name, s, (s // 4)**2, args.backbone_batch,
                         note=f'unavailable: {err}'[:100]) for s in args.backbone_sizes]
            continue
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        for size in args.backbone_sizes:
            if name not in args.full_sweep and size > args.others_max_size:
                continue
            progress(f'backbone {name} @ {size}px')
            gen = torch.Generator().manual_seed(0)
            img = torch.randn(args.backbone_batch, 3, size, size, generator=gen).to(device)
            row = Row('backbone', name, size, (size // 4)**2, args.backbone_batch)
            # with_cp only changes training memory; its forward equals VVT-S's.
            rows.append(run_case(row, partial(model, img), params, [], device, mem,
                                 args.repeats, memory_only=args.memory_only))
            if args.memory_only:
                continue
            if name in ('VVT-S', 'VVT-S(reference)'):
                row.extra['core_share'] = attention_core_share(model, img, device)
            if device.type == 'cpu' and args.backbone_memory == 'subprocess':
                progress(f'backbone {name} @ {size}px: memory in a fresh process')
                memory_in_fresh_process(row, args)
        del model
    return rows


def memory_in_fresh_process(row: Row, args) -> None:
    """Re-measure ``row``'s peak memory in a child with malloc pinned throughout.

    In this process the resident set after many large models drifts (cached
    heap, fragmentation): inference peaks of whole backbones read up to 2x
    high. A fresh process with the mmap threshold pinned from the start
    (``--memory-method pinned``) gives the exact figure; its slow timings are
    not used.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), '--memory-only', '--device', 'cpu',
           '--memory-method', 'pinned', '--suites', 'backbone', '--backbones', row.name,
           '--full-sweep', row.name, '--backbone-sizes', str(row.size),
           '--backbone-batch', str(row.batch), '--threads', str(args.threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
        child = json.loads(done.stdout.strip().splitlines()[-1])[0]
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        row.note = f'memory: in-process (fresh process failed: {type(err).__name__})'
        return
    row.fwd_mem_mb, row.train_mem_mb = child['fwd_mem_mb'], child['train_mem_mb']
    row.note = 'memory: fresh process'


def warm_up_process(build: Callable[[], nn.Module], size: int, batch: int,
                    device: torch.device) -> None:
    model = build().to(device).train()
    img = torch.randn(batch, 3, size, size, device=device)
    for _ in range(2):
        with torch.no_grad():
            model(img)
        forward_backward(partial(model, img))
    del model


def attention_core_share(model: nn.Module, img: torch.Tensor, device: torch.device) -> float:
    """Fraction of a no-grad forward spent inside the attention cores.

    Swapping the attention core cannot speed the backbone up by more than
    ``1 / (1 - share)`` (Amdahl): the check prints that bound next to the
    measured ratio.
    """
    cores = [m for m in model.modules() if hasattr(m, 'attention_core')]
    inside = [0.0]

    def timing(core: Callable) -> Callable:
        def run(*args, **kwargs):
            out = []
            inside[0] += timed(lambda: out.append(core(*args, **kwargs)), device) / 1e3
            return out[0]
        return run

    for m in cores:
        m.attention_core = timing(m.attention_core)
    try:
        with torch.no_grad():
            model(img)  # warm-up
            best = float('inf')
            for _ in range(2):
                inside[0] = 0.0
                total = timed(lambda: model(img), device) / 1e3
                if total < best:
                    best, share = total, inside[0] / total
    finally:
        for m in cores:
            del m.attention_core  # back to the class method
    return share


# --------------------------------------------------------------------------- report
def fmt(x: float, unit: str = '') -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return '-'
    return f'{x:.1f}{unit}' if abs(x) >= 10 else f'{x:.2f}{unit}'


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) and b > 0 else float('nan')


def table(title: str, header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = [title, '  '.join(h.rjust(w) for h, w in zip(header, widths))]
    out += ['  '.join(c.rjust(w) for c, w in zip(ln, widths)) for ln in lines]
    return '\n'.join(out)


def index(rows: list[Row]) -> dict[tuple[str, str, int], Row]:
    return {(r.suite, r.name, r.size): r for r in rows}


def comparison(rows: list[Row], suite: str, ours: str, title: str,
               size_label: str) -> str:
    """Each entry as absolute numbers and as ratios to ``ours`` at the same size."""
    idx = index(rows)
    header = [size_label, 'name', 'fwd ms', 'fwd+bwd ms', 'fwd MiB', 'train MiB',
              'fwd x', 'fwd+bwd x', 'train mem x', 'note']
    lines = []
    for r in [r for r in rows if r.suite == suite]:
        base = idx.get((suite, ours, r.size))
        lines.append([
            str(r.size), r.name, fmt(r.fwd_ms), fmt(r.fwd_bwd_ms), fmt(r.fwd_mem_mb),
            fmt(r.train_mem_mb),
            fmt(ratio(r.fwd_ms, base.fwd_ms)) if base else '-',
            fmt(ratio(r.fwd_bwd_ms, base.fwd_bwd_ms)) if base else '-',
            fmt(ratio(r.train_mem_mb, base.train_mem_mb)) if base else '-', r.note
        ])
    return table(f'{title}  (x = time or memory relative to {ours}; >1: {ours} is better)',
                 header, lines)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``; returns ``(a, b, r2)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx)**2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my)**2 for y in ys) or 1.0
    r2 = 1 - sum((y - a - b * x)**2 for x, y in zip(xs, ys)) / ss_tot
    return a, b, r2


def checks(rows: list[Row], args) -> list[str]:
    """The issue's must-show numbers, with PASS/FAIL."""
    idx = index(rows)
    lines = []

    def verdict(ok: bool) -> str:
        return 'PASS' if ok else 'FAIL'

    for side, need_t, need_m in [(128, 3.0, 1 / 3), (256, 4.0, None)]:
        ours, ref = idx.get(('core', 'ours(torch)', side)), idx.get(('core', 'reference', side))
        if ours and ref:
            sp = ratio(ref.fwd_bwd_ms, ours.fwd_bwd_ms)
            line = (f'core {side}x{side} tokens fwd+bwd speed-up vs reference: {sp:.2f}x '
                    f'(need >= {need_t}) {verdict(sp >= need_t)}')
            floor = idx.get(('core', GEMM_FLOOR, side))
            if floor:
                line += (f' [its 12 GEMMs alone: {floor.fwd_bwd_ms:.1f} ms, so at most '
                         f'{ratio(ref.fwd_bwd_ms, floor.fwd_bwd_ms):.2f}x on this BLAS]')
            if need_m:
                mr = ratio(ours.train_mem_mb, ref.train_mem_mb)
                line += (f'; peak memory ours/reference: {mr:.3f} (need <= {need_m:.3f}) '
                         f'{verdict(mr <= need_m)}')
            lines.append(line)
    for side in sorted({r.size for r in rows if r.name == 'ours(triton)'}):
        tri = idx[('core', 'ours(triton)', side)]
        torch_path = idx.get(('core', 'ours(torch)', side))
        if torch_path:
            lines.append(f'core {side}x{side} tokens Triton kernel vs torch path: fwd '
                         f'{ratio(torch_path.fwd_ms, tri.fwd_ms):.2f}x, fwd+bwd '
                         f'{ratio(torch_path.fwd_bwd_ms, tri.fwd_bwd_ms):.2f}x faster')
    ours, ref = idx.get(('backbone', 'VVT-S', 512)), idx.get(('backbone', 'VVT-S(reference)', 512))
    if ours and ref:
        sp = ratio(ref.fwd_ms, ours.fwd_ms)
        line = (f'VVT-S forward at 512^2 vs reference attention: {sp:.2f}x '
                f'(need >= 1.3) {verdict(sp >= 1.3)}')
        share = ref.extra.get('core_share')
        if share is not None:
            line += (f' [the reference cores are {100 * share:.1f}% of that forward, so a '
                     f'free core gives at most {1 / (1 - share):.2f}x; ours: '
                     f'{100 * ours.extra.get("core_share", float("nan")):.1f}%]')
        lines.append(line)
    for name in ('VVT-S', 'PVTv2-b2', 'VVT-S_sr4(VVT_sr)', 'VVT-S(with_cp)', 'Swin-T'):
        pts = [(r.size**2 / 1e6, r.train_mem_mb) for r in rows
               if r.suite == 'backbone' and r.name == name and not math.isnan(r.train_mem_mb)]
        if len(pts) >= 3:
            a, b, r2 = fit_line(*zip(*pts))
            lines.append(f'{name} training memory vs pixels: {b:.0f} MiB per megapixel '
                         f'(+{a:.0f} MiB), R^2 = {r2:.4f} (batch {args.backbone_batch})')
    biggest = max(args.backbone_sizes) if args.backbone_sizes else None
    vvt, pvt = idx.get(('backbone', 'VVT-S', biggest)), idx.get(('backbone', 'PVTv2-b2', biggest))
    if vvt and pvt:
        for key, label in (('train_mem_mb', 'training'), ('fwd_mem_mb', 'inference')):
            a, b = getattr(vvt, key), getattr(pvt, key)
            lines.append(f'{label} peak memory at {biggest}^2: VVT-S {a:.0f} MiB vs PVTv2-b2 '
                         f'{b:.0f} MiB {verdict(a < b)}')
    return lines


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [('attention', 'fwd_bwd_ms', 'attention: tokens/s (fwd+bwd)'),
              ('attention', 'train_mem_mb', 'attention: peak memory MiB (fwd+bwd)'),
              ('backbone', 'fwd_bwd_ms', 'backbone: images/s (fwd+bwd)'),
              ('backbone', 'train_mem_mb', 'backbone: peak memory MiB (training)')]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, (suite, key, title) in zip(axes.flat, panels):
        for name in dict.fromkeys(r.name for r in rows if r.suite == suite):
            pts = [(r.size, getattr(r, key), r) for r in rows
                   if r.suite == suite and r.name == name and not math.isnan(getattr(r, key))]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            if key.endswith('_ms'):
                unit = [(p[2].tokens if suite == 'attention' else 1) * p[2].batch for p in pts]
                ys = [u / (p[1] / 1e3) for u, p in zip(unit, pts)]
            else:
                ys = [p[1] for p in pts]
            ax.plot(xs, ys, marker='o', label=name)
        ax.set_title(title)
        ax.set_xlabel('input resolution (px)')
        # Throughput spans decades; memory on a linear axis shows linear growth.
        ax.set_yscale('log' if key.endswith('_ms') else 'linear')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Time and peak memory of vicinity attention vs the reference, softmax '
        '(SDPA), PVTv2 spatial reduction and every registered mixer; VVT-S vs PVTv2-b2 '
        'and Swin-T. Writes results.csv, summary.txt and benchmark.png.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', default='work_dirs/benchmark', help='output directory')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads; 1 keeps numbers stable on a shared machine '
                   '(OpenMP barriers stall badly when other processes hold the cores); '
                   '0: torch\'s default')
    p.add_argument('--clock', choices=['auto', 'wall', 'thread'], default='auto',
                   help='thread: CPU time of the calling thread (time.thread_time), which '
                   'ignores time spent descheduled while other processes hold the cores; '
                   'auto: thread on CPU with --threads 1, wall otherwise')
    p.add_argument('--memory-method', choices=['toggle', 'pinned'], default='toggle',
                   help='CPU only. toggle: malloc pinned to mmap only around each measured '
                   'call (timings unaffected; some readings, e.g. with_cp, come out high). '
                   'pinned: pinned for the whole run (memory exact, validated; timings '
                   'slowed 2-4x, use them from a toggle run)')
    p.add_argument('--backbone-memory', choices=['subprocess', 'inline'],
                   default='subprocess',
                   help='CPU: measure each backbone\'s peak memory again in a fresh process '
                   'pinned from the start (exact; adds ~1 min per large case) or keep the '
                   'in-process reading')
    p.add_argument('--memory-only', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test')
    p.add_argument('--suites', nargs='+', default=['core', 'attention', 'backbone'],
                   choices=['core', 'attention', 'backbone'])
    p.add_argument('--repeats', type=int, default=5, help='timed runs after a warm-up')
    p.add_argument('--core-sizes', type=int, nargs='+', default=[56, 96, 128, 192, 256],
                   help='token grid sides for the core suite')
    p.add_argument('--core-batch', type=int, default=2)
    p.add_argument('--core-heads', type=int, default=1)
    p.add_argument('--core-dim', type=int, default=48, help='head dim (VVT-S stage 1: 48)')
    p.add_argument('--attn-sizes', type=int, nargs='+', default=[224, 384, 512, 768, 1024],
                   help='image sides; the attention runs on (side/4)^2 tokens')
    p.add_argument('--attn-dims', type=int, default=128, help='channels (paper Fig. 8)')
    p.add_argument('--attn-heads', type=int, default=1)
    p.add_argument('--attn-batch', type=int, default=1)
    p.add_argument('--max-quadratic-tokens', type=int, default=10000,
                   help='skip O(N^2) mixers above this many tokens')
    p.add_argument('--backbone-sizes', type=int, nargs='+', default=[224, 512, 768, 1024])
    p.add_argument('--backbone-batch', type=int, default=1)
    p.add_argument('--full-sweep', nargs='+', default=['VVT-S', 'PVTv2-b2'],
                   help='backbones measured at every size; the others stop at '
                   '--others-max-size (CPU time)')
    p.add_argument('--others-max-size', type=int, default=512)
    p.add_argument('--backbones', nargs='+', default=None,
                   help=f'subset of {list(BACKBONES)} (default: all)')
    args = p.parse_args(argv)
    if args.quick:
        args.core_sizes, args.attn_sizes, args.backbone_sizes = [8], [32], [64]
        args.backbones = args.backbones or ['VVT-S', 'PVTv2-b2', 'Swin-T']
        args.repeats, args.max_quadratic_tokens = 0, 4096
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    import vvt_mm  # noqa: F401  (registers the mixers and backbones)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    global CLOCK
    clock = args.clock
    if clock == 'auto':
        clock = 'thread' if device.type == 'cpu' and torch.get_num_threads() == 1 else 'wall'
    CLOCK = time.thread_time if clock == 'thread' else time.perf_counter
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mem = PeakMemory(device, pinned=args.memory_method == 'pinned')

    suites = {'core': core_suite, 'attention': attention_suite, 'backbone': backbone_suite}
    rows: list[Row] = []
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn('{task.description:<60}'), BarColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task('benchmark', total=len(args.suites))
        for name in args.suites:

            def progress(msg: str) -> None:
                bar.update(task, description=msg)
                if not bar.console.is_terminal:  # logs get one line per case
                    print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr,
                          flush=True)

            rows += suites[name](args, device, mem, progress)
            bar.advance(task)
    if args.memory_only:
        print(json.dumps([dict(name=r.name, size=r.size, fwd_mem_mb=r.fwd_mem_mb,
                               train_mem_mb=r.train_mem_mb) for r in rows]))
        return rows

    env = (f'device={device} threads={torch.get_num_threads()} clock={clock} '
           f'memory_method={args.memory_method} '
           f'torch={torch.__version__} '
           f'memory={"cuda allocator" if device.type == "cuda" else "VmHWM-VmRSS delta"}')
    parts = [env]
    if 'core' in args.suites:
        parts.append(comparison(rows, 'core', 'ours(torch)',
                                f'CORE: B={args.core_batch} heads={args.core_heads} '
                                f'd={args.core_dim}', 'tokens/side'))
    if 'attention' in args.suites:
        parts.append(comparison(rows, 'attention', 'vicinity',
                                f'ATTENTION MODULES: C={args.attn_dims} '
                                f'heads={args.attn_heads} batch={args.attn_batch}', 'image px'))
    if 'backbone' in args.suites:
        parts.append(comparison(rows, 'backbone', 'VVT-S',
                                f'BACKBONES: batch={args.backbone_batch}', 'image px'))
    parts.append('MUST-SHOW CHECKS (issue 4)\n' + '\n'.join(checks(rows, args)))
    summary = '\n\n'.join(parts)
    print(summary)

    with open(out_dir / 'results.csv', 'w', newline='') as f:
        fields = [k for k in asdict(rows[0]) if k != 'extra'] if rows else []
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))
    (out_dir / 'summary.txt').write_text(summary + '\n')
    plot(rows, out_dir / 'benchmark.png')
    print(f'\nwrote {out_dir / "results.csv"}, {out_dir / "summary.txt"}, '
          f'{out_dir / "benchmark.png"}')
    return rows


if __name__ == '__main__':
    main()
