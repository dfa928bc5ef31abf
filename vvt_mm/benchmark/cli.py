"""The benchmark command: flags, the run, and what it prints and writes.

``tools/benchmark.py`` and the fresh-process memory children
(``python -m vvt_mm.benchmark.cli --memory-only ...``) both land in :func:`main`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vvt_mm.runtime.allocator import keep_freed_memory, keeping_freed_memory

from .deploy import QUICK_ARCH, deploy_suite
from .highres import HIGHRES_MODELS, highres_suite
from .measurement import Meter, PeakMemory, Row, pick_clock
from .official import official_suite
from .report import plot, summary, write_csv
from .suites import BACKBONES, attention_suite, backbone_suite, core_suite

__all__ = ['SUITES', 'parse_args', 'main']

SUITES = {'core': core_suite, 'attention': attention_suite, 'backbone': backbone_suite,
          'official': official_suite, 'highres': highres_suite, 'deploy': deploy_suite}
# Measured on the 2-core CI machine kind: inductor's C++ compile of the tiny
# --quick VVT alone took ~100 s of wall time.
QUICK_BACKEND_REASON = ("--quick: torch.compile backend 'aot_eager' (dynamo + AOTAutograd, no "
                        "code generation), since inductor's C++ compile of even the tiny VVT "
                        "takes ~100 s on a 2-core machine; --compile-backend inductor to "
                        "measure it")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Time and peak memory of vicinity attention vs the reference, softmax '
        '(SDPA), PVTv2 spatial reduction and every registered mixer; VVT-S vs PVTv2-b2 '
        'and Swin-T; VVT-S through onnxruntime and torch.compile vs eager. Writes '
        'results.csv, summary.txt and benchmark.png.',
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
    p.add_argument('--malloc', choices=['keep', 'default'], default='keep',
                   help='CPU only. keep: glibc malloc keeps freed memory for reuse, as '
                   'tools/train.py and tools/test.py set it on CPU (vvt_mm.runtime.'
                   'allocator; not with --memory-method pinned); default: leave malloc '
                   'as the process starts')
    p.add_argument('--backbone-memory', choices=['subprocess', 'inline'],
                   default='subprocess',
                   help='CPU: measure each backbone\'s peak memory again in a fresh process '
                   'pinned from the start (exact; adds ~1 min per large case) or keep the '
                   'in-process reading')
    p.add_argument('--memory-only', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes (deploy: a tiny VVT, backend aot_eager): a smoke test')
    p.add_argument('--suites', nargs='+', default=list(SUITES), choices=list(SUITES))
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
    p.add_argument('--official-sizes', type=int, nargs='+', default=[512, 1024],
                   help='image sides of the official suite (VVT-S vs the official '
                   'structure, and its share of the GEMM rate)')
    p.add_argument('--official-batch', type=int, default=1)
    p.add_argument('--official-compile', action=argparse.BooleanOptionalAction, default=True,
                   help='official suite: also time ours through torch.compile '
                   '(--compile-backend; inductor compiles each size, minutes on 2 cores)')
    p.add_argument('--official-budget-s', type=float, default=60.0,
                   help='official suite: stop adding timing rounds after this many seconds '
                   'per size (at least one timed round)')
    p.add_argument('--highres-size', type=int, nargs=2, default=[1024, 2048],
                   metavar=('H', 'W'), help='input of the high-resolution backbone suite '
                   '(Cityscapes whole image)')
    p.add_argument('--highres-batch', type=int, default=1)
    p.add_argument('--highres-inference-only', action='store_true',
                   help='high-resolution suite without training cases (PVTv2-b2 training '
                   'at 1024x2048 peaks at over 12 GiB)')
    p.add_argument('--highres-models', nargs='+', default=None,
                   help=f'subset of {list(HIGHRES_MODELS)} (default: all)')
    p.add_argument('--deploy-size', type=int, default=224,
                   help='image side of the deploy suite (VVT-S: export, compile, timing)')
    p.add_argument('--deploy-batch', type=int, default=1)
    p.add_argument('--compile-backend', default=None,
                   help='torch.compile backend of the deploy and official suites (default: '
                   'inductor; '
                   'aot_eager with --quick)')
    args = p.parse_args(argv)
    args.deploy_arch, args.deploy_label, args.deploy_reason = 'small', 'VVT-S', ''
    args.official_arch, args.official_label = 'small', 'VVT-S'
    if args.quick:
        args.core_sizes, args.attn_sizes, args.backbone_sizes = [8], [32], [64]
        args.backbones = args.backbones or ['VVT-S', 'PVTv2-b2', 'Swin-T']
        args.repeats, args.max_quadratic_tokens = 0, 4096
        args.deploy_arch, args.deploy_label = QUICK_ARCH, 'tiny VVT (dict arch)'
        args.deploy_size = 64
        args.official_arch, args.official_label = QUICK_ARCH, 'tiny VVT (dict arch)'
        args.official_sizes, args.highres_size = [64], [64, 128]
        if args.compile_backend is None:
            args.compile_backend, args.deploy_reason = 'aot_eager', QUICK_BACKEND_REASON
    args.compile_backend = args.compile_backend or 'inductor'
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the selected suites; print and write the report; return the rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cpu' and args.malloc == 'keep' and args.memory_method != 'pinned':
        keep_freed_memory()
    clock = pick_clock(args.clock, device)
    meter = Meter(device, clock, PeakMemory(device, pinned=args.memory_method == 'pinned'))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[Row] = []
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn('{task.description:<60}'), BarColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task('benchmark', total=len(args.suites))

        def progress(msg: str) -> None:
            bar.update(task, description=msg)
            if not bar.console.is_terminal:  # logs get one line per case
                print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)

        for name in args.suites:
            rows += SUITES[name](args, meter, progress)
            bar.advance(task)
    # What follows is this command's output (a report, or JSON for the parent
    # process), not logging.
    if args.memory_only:
        print(json.dumps([dict(name=r.name, size=r.size, fwd_mem_mb=r.fwd_mem_mb,
                               train_mem_mb=r.train_mem_mb) for r in rows]))
        return rows

    env = (f'device={device} threads={torch.get_num_threads()} clock={clock.name} '
           f'memory_method={args.memory_method} torch={torch.__version__} '
           f'malloc={"keep" if keeping_freed_memory() else "default"} '
           f'memory={"cuda allocator" if device.type == "cuda" else "VmHWM-VmRSS delta"}')
    text = summary(rows, args, env)
    print(text)
    write_csv(rows, out_dir / 'results.csv')
    (out_dir / 'summary.txt').write_text(text + '\n')
    plot(rows, out_dir / 'benchmark.png')
    print(f'\nwrote {out_dir / "results.csv"}, {out_dir / "summary.txt"}, '
          f'{out_dir / "benchmark.png"}')
    return rows


if __name__ == '__main__':
    main()
