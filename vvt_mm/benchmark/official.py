"""VVT-S against the official model's structure, and against the machine's GEMM rate.

* ``official``: our VVT-S and :class:`~vvt_mm.benchmark.official_structure_vvt.
  OfficialStructureVVT` (the official ``classification/vvt.py`` layout and
  ops, re-implemented) with the same weights, forward (no grad) and
  forward+backward in eager mode, timed in turn in one loop so load from other
  processes falls on both alike.
* the machine's large-GEMM rate: a ``1024 x 1024 x 1024`` fp32 matmul at the
  run's thread count, best of several, in multiply-adds per second; measured
  before and after the models (best of both), so drift shows up on neither side.
* VVT-S forward's share of that rate: its multiply-adds counted in
  ``tools/analysis/get_flops.py``'s convention (mmengine's ``FlopAnalyzer``,
  fvcore: one multiply-add = one FLOP, element-wise ops uncounted, attention
  in the paper's ``N x 4d`` formulation) over its eager forward time.
* ours through ``torch.compile`` (``--compile-backend``, inductor by default;
  ``--no-official-compile`` skips it), forward and forward+backward, against
  the official structure in eager mode (what its users run); its compile time
  (first call minus a steady one, cold caches) goes into the row.
* two bounds: the linear and conv layers' multiply-adds at that rate
  (:func:`dense_floor_ms`) are a time no implementation goes below, so the
  official-structure time over it is the largest speed-up this machine allows;
  and ours' linear and conv layers alone, timed at the shapes and layouts our
  forward runs them (:mod:`.dense_layers`, row :data:`DENSE`), bound what any
  VVT-S built from those layers reaches here.
"""
from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn

from .dense_layers import DenseReplay, record_dense_calls
from .deploy import (
    cold_compile_caches,
    compiled_name,
    first_call_overhead_s,
    note_failure,
    training_compile_settings,
)
from .measurement import Meter, Row, forward_backward
from .suites import Progress

__all__ = ['OURS', 'OFFICIAL', 'DENSE', 'ours_compiled', 'GEMM_RATE', 'MAC_CONVENTION',
           'gemm_rate_row', 'forward_macs', 'macs_breakdown', 'dense_floor_ms', 'official_suite']

OURS, OFFICIAL = 'VVT-S(ours)', 'VVT-S(official structure)'
DENSE = 'VVT-S(ours) linear+conv layers alone'
GEMM_RATE = 'GEMM 1024^3 fp32'
MAC_CONVENTION = ("multiply-adds as tools/analysis/get_flops.py counts them (fvcore via "
                  "mmengine's FlopAnalyzer: 1 multiply-add = 1 FLOP; convs, linears, "
                  "matmuls, norms; element-wise ops not counted; attention in the paper's "
                  "N x 4d formulation)")


def ours_compiled(backend: str) -> str:
    """The row name of ours through ``torch.compile(backend=backend)``."""
    return f'{OURS} {compiled_name(backend)}'


def gemm_rate_row(meter: Meter, side: int = 1024, tries: int = 8) -> Row:
    """Best time of one ``side^3`` fp32 matmul; ``extra['macs_per_s']`` its rate."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(side, side, generator=gen).to(meter.device) for _ in range(2))
    out = torch.empty(side, side, device=meter.device)
    torch.matmul(a, b, out=out)  # BLAS set-up
    best = min(meter.timed(partial(torch.matmul, a, b, out=out)) for _ in range(tries))
    row = Row('machine', GEMM_RATE, side, 0, 1, fwd_ms=best,
              note=f'{torch.get_num_threads()} thread(s), best of {tries}')
    row.extra['macs_per_s'] = side**3 / (best / 1e3)
    return row


def forward_macs(arch: str | dict, size: int) -> int:
    """Multiply-adds of one ``size x size`` VVT forward in get_flops' convention."""
    return macs_breakdown(arch, size)['total']


def macs_breakdown(arch: str | dict, size: int) -> dict[str, int]:
    """Forward multiply-adds of a ``size x size`` VVT: ``total`` (get_flops' count),
    ``dense`` (its linear and conv layers) and ``stem`` (the first patch embedding)."""
    from mmengine.analysis import FlopAnalyzer

    from vvt_mm.models.backbones.vvt import VVT
    model = VVT(arch, attn_cfg=dict(type='vicinity', impl='reference')).eval()
    analyzer = FlopAnalyzer(model, (torch.zeros(1, 3, size, size), ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        total = int(analyzer.total())
    by_op = analyzer.by_operator()
    return dict(total=total, dense=int(by_op.get('linear', 0) + by_op.get('conv', 0)),
                stem=int(analyzer.by_module()['stages.0.patch_embed.proj']))


def dense_floor_ms(macs: dict[str, float], macs_per_s: float) -> tuple[float, float]:
    """Least time of the linear and conv layers alone at the machine's GEMM rate, in ms.

    Every implementation of VVT-S does these multiply-adds (the official model
    too), and no layer runs faster than the large GEMM. Forward: ``dense``.
    Forward+backward: each layer's weight gradient and input gradient cost
    its forward again, except the stem's input gradient (the image needs
    none): ``3 dense - stem``.
    """
    fwd = macs['dense'] / macs_per_s * 1e3
    return fwd, (3 * macs['dense'] - macs['stem']) / macs_per_s * 1e3


def _interleaved(fns: dict[str, Callable[[], object]], meter: Meter, budget_s: float,
                 max_rounds: int) -> dict[str, float]:
    """Best ms of each call over rounds that run every call once (one warm-up round).

    Rounds continue up to ``max_rounds`` while the time spent stays under
    ``budget_s``; at least one timed round runs.
    """
    spent = sum(meter.timed(fn) for fn in fns.values()) / 1e3
    best = dict.fromkeys(fns, math.inf)
    for i in range(max(max_rounds, 1)):
        if i and spent > budget_s:
            break
        for name, fn in fns.items():
            took = meter.timed(fn)
            best[name] = min(best[name], took)
            spent += took / 1e3
    return best


def _model_calls(models: dict[str, nn.Module],
                 img: torch.Tensor) -> dict[str, Callable[[], object]]:
    """``'<name> fwd'`` (no grad) and ``'<name> fwd_bwd'`` calls of each model."""
    calls: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        def fwd(model: nn.Module = model) -> None:
            with torch.no_grad():
                model(img)

        def fwd_bwd(model: nn.Module = model) -> None:
            model.zero_grad(set_to_none=True)
            forward_backward(partial(model, img))

        calls[f'{name} fwd'], calls[f'{name} fwd_bwd'] = fwd, fwd_bwd
    return calls


def _compiled_calls(row: Row, compiled: nn.Module, img: torch.Tensor,
                    meter: Meter) -> dict[str, Callable[[], object]]:
    """The compiled model's calls that compiled; their compile times (or failures) go
    into ``row``."""
    calls = {}
    for what, call in _model_calls({row.name: compiled}, img).items():
        kind = what.rsplit(' ', 1)[1]
        try:
            setup_s = first_call_overhead_s(call, meter)
        except Exception as err:  # a compiler gap: record it, time the rest
            note_failure(row, kind, err)
            continue
        setattr(row, 'fwd_setup_s' if kind == 'fwd' else 'fwd_bwd_setup_s', setup_s)
        calls[what] = call
    return calls


def _dense_layers_row(model: nn.Module, img: torch.Tensor, macs: dict[str, int],
                      args: argparse.Namespace, meter: Meter) -> Row:
    """Ours' linear and conv calls replayed alone: a bound, not an implementation."""
    row = Row('official', DENSE, img.shape[-1], (img.shape[-1] // 4)**2, args.official_batch,
              note='bound, not an implementation')
    replay = DenseReplay(record_dense_calls(model, img), meter.device)
    # Best of three at most: a bound needs no more, and 1024^2 calls take seconds.
    row.fwd_ms, row.fwd_bwd_ms = replay.calls_ms(meter.timed, min(max(args.repeats, 1), 2) + 1)
    row.extra['macs'] = macs['total'] * args.official_batch
    return row


@contextlib.contextmanager
def _cold_compile(backend: str, device: torch.device):
    with cold_compile_caches(), training_compile_settings(backend, device):
        yield


def official_suite(args: argparse.Namespace, meter: Meter, progress: Progress) -> list[Row]:
    """Ours (eager and compiled) vs the official structure (eager), fwd and fwd+bwd,
    and the GEMM-rate share."""
    from vvt_mm.benchmark.official_structure_vvt import official_structure_pair
    progress('machine: 1024^3 fp32 GEMM rate')
    gemm = gemm_rate_row(meter)
    rows: list[Row] = []
    for size in args.official_sizes:
        progress(f'official: building VVT-S pair, counting multiply-adds @ {size}px')
        macs = macs_breakdown(args.official_arch, size)
        ours, official = official_structure_pair(args.official_arch, seed=0)
        ours, official = ours.to(meter.device).train(), official.to(meter.device).train()
        img = torch.randn(args.official_batch, 3, size, size,
                          generator=torch.Generator().manual_seed(0)).to(meter.device)
        models = {OURS: ours, OFFICIAL: official}
        size_rows = {name: Row('official', name, size, (size // 4)**2, args.official_batch,
                               note=args.official_label) for name in models}
        calls = _model_calls(models, img)
        backend = args.compile_backend if args.official_compile else None
        # Compiled code lives only inside the cold-cache scope: time it there.
        with _cold_compile(backend, meter.device) if backend else contextlib.nullcontext():
            if backend:
                comp = size_rows[ours_compiled(backend)] = Row(
                    'official', ours_compiled(backend), size, (size // 4)**2,
                    args.official_batch, note=args.official_label)
                progress(f'official: torch.compile({backend}) of ours @ {size}px')
                calls.update(_compiled_calls(comp, torch.compile(ours, backend=backend),
                                             img, meter))
            progress(f'official: {" / ".join(size_rows)} @ {size}px, in turn')
            best = _interleaved(calls, meter, args.official_budget_s,
                                max(args.repeats, 1) + 1)
        for name, row in size_rows.items():
            row.fwd_ms = best.get(f'{name} fwd', math.nan)
            row.fwd_bwd_ms = best.get(f'{name} fwd_bwd', math.nan)
            row.extra['macs'] = macs['total'] * args.official_batch
            row.extra['dense_macs'] = macs['dense'] * args.official_batch
            row.extra['stem_macs'] = macs['stem'] * args.official_batch
            rows.append(row)
        for model in models.values():
            model.zero_grad(set_to_none=True)
        progress(f'official: our linear and conv layers alone @ {size}px')
        rows.append(_dense_layers_row(ours, img, macs, args, meter))
        del ours, official, models, calls
    progress('machine: 1024^3 fp32 GEMM rate again')
    again = gemm_rate_row(meter)
    if again.fwd_ms < gemm.fwd_ms:
        gemm = again
    gemm.note += ', before and after the models'
    return [gemm, *rows]
