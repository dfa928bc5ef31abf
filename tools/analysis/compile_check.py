"""torch.compile health of every backbone family: graph breaks and recompiles per size.

    python tools/analysis/compile_check.py                # every family, eval and train
    python tools/analysis/compile_check.py --families VVT LVT --modes train

For each family (the published arch) this prints the graphs and graph breaks
``torch._dynamo.explain`` finds, then compiles with ``dynamic=True`` and
counts the compiles over three input sizes (1 means one graph serves every
size) with the guard that failed for each further one. A square first size
makes dynamo assume ``H == W`` (duck sizing), so a non-square size compiles
again; the default sizes start square to show it (``--no-duck-shape``:
what :class:`~vvt_mm.engine.TorchCompileHook` sets for ``compile=True``). The backend is
``aot_eager`` by default: dynamo and AOTAutograd decide both counts, code
generation does not. Speed and inductor compile time of
VVT-S are the deploy suite of ``tools/benchmark.py``::

    python tools/benchmark.py --suites deploy --deploy-size 512 --compile-backend inductor
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch._dynamo
import torch.fx.experimental._config as fx_config
from torch import nn
from torch._dynamo import convert_frame
from torch._dynamo.utils import counters


def _families() -> dict[str, Callable[[], nn.Module]]:
    from vvt_mm import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA
    return {
        'VVT': lambda: VVT(arch='tiny'),
        'VVT-sr': lambda: VVT(arch='tiny', sr_ratios=(8, 4, 2, 1)),
        'LocalViT': lambda: LocalViT(arch='tiny', out_indices=(3, 7, 11)),
        'LocalViTPVT': lambda: LocalViTPVT(arch='tiny'),
        'ViTAEv2VSA': lambda: ViTAEv2VSA(),
        'LVT': lambda: LVT(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    families = list(_families())
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--families', nargs='+', default=families, choices=families)
    p.add_argument('--modes', nargs='+', default=['eval', 'train'], choices=['eval', 'train'])
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 224, 256, 320, 288, 192],
                   metavar='H W', help='three (or more) H W pairs')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--backend', default='aot_eager')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--duck-shape', action=argparse.BooleanOptionalAction, default=True,
                   help="dynamo's duck sizing (torch's default); --no-duck-shape is what "
                   'TorchCompileHook sets for compile=True training')
    args = p.parse_args(argv)
    if len(args.sizes) % 2:
        p.error('--sizes takes H W pairs')
    args.sizes = list(zip(args.sizes[::2], args.sizes[1::2]))
    return args


def run(model: nn.Module, x: torch.Tensor, train: bool) -> None:
    with torch.set_grad_enabled(train):
        outs = model(x.requires_grad_(train))
        if train:
            sum(o.float().sum() for o in outs).backward()


@contextlib.contextmanager
def recompile_reasons() -> Iterator[list[str]]:
    """Collect the guard failures that made dynamo compile again.

    Wraps dynamo's own reason lookup (``torch._dynamo.convert_frame``, torch
    2.x); yields an empty list if that function is not there.
    """
    reasons: list[str] = []
    lookup = getattr(convert_frame, 'get_and_maybe_log_recompilation_reasons', None)
    if lookup is None:
        yield reasons
        return

    def recording(*args, **kwargs):
        found = lookup(*args, **kwargs)
        reasons.extend(line for reason in found for line in reason.splitlines())
        return found

    convert_frame.get_and_maybe_log_recompilation_reasons = recording
    try:
        yield reasons
    finally:
        convert_frame.get_and_maybe_log_recompilation_reasons = lookup


def check(build: Callable[[], nn.Module], train: bool, sizes: list[tuple[int, int]],
          batch: int, backend: str) -> dict:
    """Graphs and breaks (explain, first size); compiles, their causes and seconds over
    ``sizes``."""
    torch.manual_seed(0)
    model = build().train(train)
    torch._dynamo.reset()
    with torch.set_grad_enabled(train):
        explained = torch._dynamo.explain(model)(torch.randn(batch, 3, *sizes[0]))
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend=backend, dynamic=True)
    seconds = []
    with recompile_reasons() as recompiles:
        for h, w in sizes:
            start = time.perf_counter()
            run(compiled, torch.randn(batch, 3, h, w), train)
            seconds.append(time.perf_counter() - start)
    return dict(graphs=explained.graph_count, breaks=explained.graph_break_count,
                reasons=[str(b.reason) for b in explained.break_reasons],
                recompiles=list(dict.fromkeys(recompiles)),
                compiles=counters['stats']['unique_graphs'],
                first_s=seconds[0], later_s=max(seconds[1:]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    families = _families()
    sizes = ', '.join(f'{h}x{w}' for h, w in args.sizes)
    print(f'torch {torch.__version__}, backend {args.backend}, dynamic=True, duck sizing '
          f'{"on" if args.duck_shape else "off"}, batch {args.batch}, sizes {sizes}, '
          f'{torch.get_num_threads()} threads')
    print(f'{"family":<12} {"mode":<5} {"graphs":>6} {"breaks":>6} {"compiles":>8} '
          f'{"first call s":>12} {"slowest later s":>15}')
    for name in args.families:
        for mode in args.modes:
            with fx_config.patch(use_duck_shape=args.duck_shape):
                r = check(families[name], mode == 'train', args.sizes, args.batch,
                          args.backend)
            print(f'{name:<12} {mode:<5} {r["graphs"]:>6} {r["breaks"]:>6} '
                  f'{r["compiles"]:>8} {r["first_s"]:>12.1f} {r["later_s"]:>15.2f}', flush=True)
            for reason in r['reasons']:
                print(f'    break: {reason}')
            for reason in r['recompiles']:
                print(f'    compiled again: {reason}')


if __name__ == '__main__':
    main()
