"""Deployment paths of VVT against PyTorch eager: onnxruntime and torch.compile.

Inference runs eagerly, through an ONNX export (``torch.onnx.export(...,
dynamo=True)``) in an onnxruntime CPU session with torch's thread count, and
through ``torch.compile``; training (forward+backward) eagerly and compiled.
The engines are timed in turn within one loop, so load from other processes
on a shared machine falls on all of them alike and their ratios hold even
when absolute times drift. Compile time is the first call minus a steady
call, on the wall clock whatever ``--clock`` says: compile workers run in
other processes, which a thread clock would not see. It is measured cold
(empty dynamo and inductor caches), as a fresh deployment would see it.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial

import torch
import torch.nn as nn

from .measurement import WALL_CLOCK, Meter, Row, forward_backward
from .suites import Progress

__all__ = ['QUICK_ARCH', 'EAGER', 'ONNXRUNTIME', 'cold_compile_caches', 'compiled_name',
           'deploy_suite', 'note_failure', 'training_compile_settings']

# Small enough that export and compile of the whole backbone take seconds.
QUICK_ARCH = dict(embed_dims=[16, 32, 32, 64], num_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1],
                  mlp_ratios=[2, 2, 2, 2])
EAGER, ONNXRUNTIME = 'eager', 'onnxruntime'


def compiled_name(backend: str) -> str:
    return f'torch.compile({backend})'


def note_failure(row: Row, what: str, err: Exception) -> None:
    """Record in ``row.note`` that ``what`` failed, with the error's first line."""
    first = (str(err).strip().splitlines() or [''])[0]
    row.note = f'{row.note}; {what} failed: {type(err).__name__}: {first}'[:160]


def interleaved_best(fns: dict[str, Callable[[], object]], meter: Meter,
                     rounds: int) -> dict[str, float]:
    """Best time (ms) of each call over ``rounds`` rounds that run every call once."""
    for fn in fns.values():  # warm-up
        fn()
    best = dict.fromkeys(fns, float('inf'))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], meter.timed(fn))
    return best


def first_call_overhead_s(fn: Callable[[], object], meter: Meter) -> float:
    """Wall seconds the first call takes beyond a steady one (its compile time)."""
    wall = replace(meter, clock=WALL_CLOCK)
    first = wall.timed(fn)
    steady = min(wall.timed(fn) for _ in range(2))
    return (first - steady) / 1e3


@contextlib.contextmanager
def cold_compile_caches() -> Iterator[None]:
    """Compile from scratch in a throw-away cache directory, and forget it afterwards.

    Without it a second run reads inductor's on-disk caches and reports a
    fraction of the compile time a fresh deployment pays.
    """
    torch._dynamo.reset()
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:  # another torch layout: the caches stay, the timing says so
        temporary_cache_dir = None
    try:
        with tempfile.TemporaryDirectory(prefix='vvt_bench_compile_') as tmp:
            with (temporary_cache_dir(tmp) if temporary_cache_dir else
                  contextlib.nullcontext()):
                yield
    finally:
        torch._dynamo.reset()


@contextlib.contextmanager
def training_compile_settings(backend: str, device: torch.device) -> Iterator[None]:
    """The compiler settings :class:`~vvt_mm.engine.TorchCompileHook` gives a
    ``compile=`` training run on ``device``, so compiled rows time what users get."""
    if backend != 'inductor':
        yield
        return
    import torch._inductor.config

    from vvt_mm.engine.compile_hook import inductor_config_for
    with torch._inductor.config.patch(inductor_config_for(device.type)):
        yield


def onnxruntime_forward(model: nn.Module, img: torch.Tensor,
                        threads: int) -> Callable[[], list]:
    """An onnxruntime CPU session of ``model`` exported at ``img``'s shape, as a call."""
    import onnxruntime as ort
    program = torch.onnx.export(model, (img, ), dynamo=True, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    with tempfile.TemporaryDirectory(prefix='vvt_bench_onnx_') as tmp:
        path = os.path.join(tmp, 'model.onnx')
        program.save(path)
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: img.detach().cpu().numpy()}
    return partial(session.run, None, feed)


def max_abs_diff(outs: Sequence, refs: Sequence[torch.Tensor]) -> float:
    """Largest elementwise difference between two sequences of maps (arrays or tensors)."""
    return max(float((torch.as_tensor(o).cpu() - r.detach().cpu()).abs().max())
               for o, r in zip(outs, refs))


def deploy_suite(args: argparse.Namespace, meter: Meter, progress: Progress) -> list[Row]:
    """Eager against onnxruntime (inference) and torch.compile (inference, training)."""
    from vvt_mm.models.backbones.vvt import VVT
    size, batch, backend = args.deploy_size, args.deploy_batch, args.compile_backend
    model = VVT(args.deploy_arch).to(meter.device).eval()
    img = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    img = img.to(meter.device)
    rows = {name: Row('deploy', name, size, (size // 4)**2, batch, note=args.deploy_label)
            for name in (EAGER, ONNXRUNTIME, compiled_name(backend))}
    eager, ort_row, comp = rows.values()
    rounds = max(args.repeats, 2) + 1

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()
        return run

    infer = {EAGER: no_grad(partial(model, img))}
    with torch.no_grad():
        reference = model(img)
    if meter.device.type != 'cpu':
        ort_row.note += f'; skipped: an onnxruntime CPU session vs a model on {meter.device}'
    else:
        progress(f'deploy: ONNX export and onnxruntime session @ {size}px')
        try:
            start = WALL_CLOCK.now()
            infer[ONNXRUNTIME] = onnxruntime_forward(model, img, torch.get_num_threads())
            ort_row.fwd_setup_s = WALL_CLOCK.now() - start
            ort_row.extra['max_abs_diff'] = max_abs_diff(infer[ONNXRUNTIME](), reference)
        except Exception as err:  # an exporter or runtime gap: record it, go on
            note_failure(ort_row, 'export', err)

    params = [p for p in model.parameters() if p.requires_grad]

    def train_step(forward: Callable[[], object]) -> Callable[[], None]:
        def step() -> None:
            for p in params:
                p.grad = None
            forward_backward(forward)
        return step

    with cold_compile_caches(), training_compile_settings(backend, meter.device):
        compiled = torch.compile(model, backend=backend)
        progress(f'deploy: torch.compile({backend}) inference @ {size}px')
        try:
            comp.fwd_setup_s = first_call_overhead_s(no_grad(partial(compiled, img)), meter)
            infer[comp.name] = no_grad(partial(compiled, img))
            comp.extra['max_abs_diff'] = max_abs_diff(infer[comp.name](), reference)
        except Exception as err:  # a compiler gap: record it, go on
            note_failure(comp, 'inference', err)
        progress(f'deploy: inference, {" / ".join(infer)} in turn')
        for name, ms in interleaved_best(infer, meter, rounds).items():
            rows[name].fwd_ms = ms

        model.train()
        train = {EAGER: train_step(partial(model, img))}
        progress(f'deploy: torch.compile({backend}) training @ {size}px')
        try:
            comp.fwd_bwd_setup_s = first_call_overhead_s(train_step(partial(compiled, img)),
                                                         meter)
            train[comp.name] = train_step(partial(compiled, img))
        except Exception as err:  # a compiler gap: record it, go on
            note_failure(comp, 'training', err)
        progress(f'deploy: training, {" / ".join(train)} in turn')
        for name, ms in interleaved_best(train, meter, rounds).items():
            rows[name].fwd_bwd_ms = ms
        for p in params:
            p.grad = None
    return list(rows.values())
