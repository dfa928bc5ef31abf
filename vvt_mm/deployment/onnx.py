"""ONNX export with dynamic H, W, checked against PyTorch with onnxruntime.

The graph is captured by ``torch.export`` itself (non-strict), then translated
by ``torch.onnx``. Calling ``torch.onnx.export`` on the module directly would
be shorter, but when ``torch.export`` refuses a dynamic dimension it falls
back to other capture strategies that may specialise the graph to the traced
size and still write a file: wrong at every other size. Here a graph that
cannot stay dynamic is an :class:`ExportError` instead.

What cannot export is said before tracing (:func:`export_problems`): those
modules are named with the alternative.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

__all__ = ['MAX_RELATIVE_ERROR', 'SIZE_RANGE', 'ExportError', 'OutputError',
           'compare_with_onnxruntime', 'dynamic_size_range', 'export_onnx', 'export_problems',
           'use_exportable_pooling', 'verification_sizes']

# Dynamic H, W range of an exported graph. The lower end keeps every stage of
# a stride-32 pyramid at least 2x2: torch.export specialises sizes 0 and 1, so
# a range reaching a 1x1 stage cannot stay symbolic.
SIZE_RANGE = (64, 4096)
MAX_RELATIVE_ERROR = 1e-4


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message says what to do instead."""


@dataclass
class OutputError:
    """How far one ONNX output is from PyTorch's at one input size.

    ``max_rel`` is ``max_abs`` over the largest magnitude of PyTorch's output
    (``max_abs`` itself when that is 0), a scale-free error of the whole map.
    """

    size: tuple[int, int]
    name: str
    max_abs: float
    max_rel: float


def export_problems(model: nn.Module) -> list[str]:
    """Modules of ``model`` that no exporter translates, one line each with the fix."""
    from vvt_mm.models.attention.vicinity import VicinityAttention

    problems = []
    for name, module in model.named_modules():
        if isinstance(module, VicinityAttention) and module.impl not in ('auto', 'reference'):
            problems.append(
                f'{name} ({type(module).__name__}) has impl={module.impl!r}, a kernel the '
                "exporters cannot translate: build it with impl='auto' (the default; it "
                "exports the official formulation) or impl='reference'")
    return problems


def use_exportable_pooling(model: nn.Module) -> int:
    """Swap ``nn.AdaptiveAvgPool2d`` modules for ones that export with dynamic H, W.

    Same function in eager mode, so ``model`` is changed in place. torch.onnx
    lowers adaptive pooling with the windows of the traced size, silently wrong
    at others (e.g. mmseg's PPM in UPerNet heads); global pooling (output 1)
    exports correctly and is kept. Returns how many modules were swapped.
    """
    from vvt_mm.models.layers.adaptive_pool import AdaptiveAvgPool2d

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if (isinstance(child, nn.AdaptiveAvgPool2d)
                    and not isinstance(child, AdaptiveAvgPool2d)
                    and child.output_size not in (1, (1, 1))):
                setattr(module, name, AdaptiveAvgPool2d(child.output_size))
                swapped += 1
    return swapped


# A square input whose side every stage stride (a power of two up to 256) divides:
# a stage's map side at this input gives the stage's stride exactly.
_PROBE_SIZE = 256


def _reducing_modules(model: nn.Module) -> list[tuple[str, nn.Module, str, int]]:
    """Modules that coarsen their map again: ``(name, module, what, factor)``."""
    from vvt_mm.models.layers.kv_reduction import KVReductionMixin
    from vvt_mm.models.layers.varied_size_window_attention import VariedSizeWindowAttention

    found = []
    for name, module in model.named_modules():
        if isinstance(module, VariedSizeWindowAttention):
            found.append((name, module, 'window_size', module.window_size))
        elif isinstance(module, KVReductionMixin) and module.sr_ratio > 1:
            found.append((name, module, 'sr_ratio', module.sr_ratio))
    return found


def _smallest_dynamic_size(model: nn.Module, channels: int = 3) -> tuple[int, str | None]:
    """The lowest H, W a dynamic graph of ``model`` serves, and which module sets it.

    A spatial reduction (``sr_ratio``) or a window (ViTAEv2's VSA) coarsens its
    stage's map once more: at stride ``s`` with factor ``r`` the input needs
    more than ``s * r`` pixels for 2 reduced cells, because torch.export
    specialises a map of one cell (its convolutions guard on it). The stride
    of each such module is read from one forward at a probe size.
    """
    reducers = _reducing_modules(model)
    if not reducers:
        return SIZE_RANGE[0], None
    sides = {}

    def record(name):
        def hook(module, args):
            # VSA takes an NCHW map, the token mixers (tokens, (h, w)).
            sides.setdefault(name, args[1][0] if len(args) > 1 else args[0].shape[2])
        return hook

    handles = [m.register_forward_pre_hook(record(name)) for name, m, _, _ in reducers]
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, channels, _PROBE_SIZE, _PROBE_SIZE, dtype=param.dtype,
                              device=param.device))
    finally:
        for handle in handles:
            handle.remove()
    lowest, reason = SIZE_RANGE[0], None
    for name, module, what, factor in reducers:
        stride = _PROBE_SIZE // int(sides[name])
        if stride * factor + 1 > lowest:
            lowest = stride * factor + 1
            reason = (f'{name} ({type(module).__name__}, {what}={factor}, at stride '
                      f'{stride}) needs H, W > {stride} x {factor} = {stride * factor} for '
                      'dynamic sizes: below, it reduces its map to a single cell, a size '
                      'torch.export specialises the graph to')
    return lowest, reason


def dynamic_size_range(model: nn.Module, channels: int = 3) -> tuple[int, int]:
    """The default range of H, W for a dynamic graph of ``model``.

    :data:`SIZE_RANGE`, or from a higher lower end where a module needs one
    (a window or spatial reduction in a deep stage, e.g. 225 for ViTAEv2-VSA,
    129 for VVT with ``sr_ratios=(4, 4, 4, 4)``).
    """
    return _smallest_dynamic_size(model, channels)[0], SIZE_RANGE[1]


def _dynamic_shapes(model: nn.Module, example: Tensor,
                    size_range: tuple[int, int]) -> tuple[dict, ...]:
    lo, hi = size_range
    h, w = example.shape[2:]
    lowest, reason = _smallest_dynamic_size(model, example.shape[1])
    if reason is not None and min(lo, h, w) < lowest:
        below = (f'the range [{lo}, {hi}] reaches below it' if lo < lowest else
                 f'the export size {h}x{w} is below it')
        raise ExportError(f'{reason}; {below}. Export at a size of at least {lowest}, with '
                          f'H, W in [{lowest}, {hi}], or at a fixed size (without dynamic '
                          'H, W)')
    if not (lo <= h <= hi and lo <= w <= hi):
        raise ExportError(f'the export size {h}x{w} is outside the dynamic range '
                          f'[{lo}, {hi}] of H and W; export at a size inside it')
    dim = torch.export.Dim
    return ({2: dim('height', min=lo, max=hi), 3: dim('width', min=lo, max=hi)},)


def _summary(err: Exception, limit: int = 4) -> str:
    """The informative lines of a torch.export error (it can run to pages)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    violated = [line for line in lines if line.startswith('- Not all values')]
    return '\n  '.join((violated or lines)[:limit])


def export_onnx(model: nn.Module, example: Tensor, path: str, dynamic: bool = False,
                size_range: tuple[int, int] | None = None, input_name: str = 'input',
                output_names: Sequence[str] | None = None) -> None:
    """Write ``model(example)`` as an ONNX graph to ``path``.

    Args:
        model: the module to export, in eval mode; it takes one NCHW tensor. With
            ``dynamic`` its adaptive pooling modules are swapped in place for
            exportable ones (:func:`use_exportable_pooling`).
        example: the input it is traced with (batch and channels stay fixed).
        path: the ``.onnx`` file (weights inside unless over 2 GB).
        dynamic: keep H and W symbolic within ``size_range``.
        size_range: ``(min, max)`` of H and W when ``dynamic``; default
            :func:`dynamic_size_range`.
        input_name: name of the graph input.
        output_names: names of the graph outputs, in order.

    Raises:
        ExportError: a module cannot export, or not at these dynamic sizes (named,
            with the alternative; checked before tracing), or torch.export could
            not keep H, W dynamic.
    """
    problems = export_problems(model)
    if problems:
        raise ExportError(f'{type(model).__name__} cannot be exported to ONNX:\n  '
                          + '\n  '.join(problems))
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = _dynamic_shapes(
            model, example, size_range or dynamic_size_range(model, example.shape[1]))
        use_exportable_pooling(model)
    with torch.no_grad():
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes,
                                          strict=False)
        except Exception as err:  # torch.export's errors have no common base class
            hint = (' A guard on H, W: raise the lower end of the size range, or export '
                    'at a fixed size (without dynamic H, W).' if dynamic else '')
            raise ExportError(f'torch.export failed on {type(model).__name__} '
                              f'({type(err).__name__}):\n  {_summary(err)}\n{hint}') from err
        onnx_program = torch.onnx.export(program, (example,), input_names=[input_name],
                                         output_names=list(output_names or []) or None,
                                         dynamo=True, verbose=False)
    if dynamic:
        _name_dims(onnx_program.model.graph, program, ('height', 'width'))
    onnx_program.save(path)


def _name_dims(graph, program: torch.export.ExportedProgram, names: Sequence[str]) -> None:
    """Call the symbolic H, W ``height``/``width`` in every shape of the ONNX graph.

    torch.export names them after internal symbols (``s53``); a reader of the
    file (Netron, onnxruntime's input shapes) should see what they are.
    """
    import onnx_ir as ir

    user_input = program.graph_signature.user_inputs[0]
    image = next(n for n in program.graph.nodes if n.name == user_input)
    symbols = {str(image.meta['val'].shape[2 + i]): name for i, name in enumerate(names)}
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, symbols)) + r')\b')

    def rename(dim):
        if isinstance(dim, ir.SymbolicDim) and dim.value:
            return pattern.sub(lambda m: symbols[m.group(1)], dim.value)
        return dim

    values = [*graph.inputs, *graph.outputs,
              *(value for node in graph.all_nodes() for value in node.outputs)]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([rename(dim) for dim in value.shape])


def verification_sizes(height: int, width: int, dynamic: bool,
                       size_range: tuple[int, int] = SIZE_RANGE) -> list[tuple[int, int]]:
    """Input sizes to check an export at: its own, and for a dynamic graph two more.

    The extra sizes are non-square and, for export sizes that are multiples
    of 32, not multiples of any stride, so padding and angle arithmetic are
    exercised at sizes the trace never saw.
    """
    sizes = [(height, width)]
    if not dynamic:
        return sizes
    lo, hi = size_range
    for dh, dw in ((13, 5), (29, -19)):
        h = min(max(height + dh, lo), hi)
        w = min(max(width + dw, lo), hi)
        if h == w:
            w = w + 3 if w + 3 <= hi else w - 3
        if (h, w) not in sizes:
            sizes.append((h, w))
    return sizes


def _as_list(outputs) -> list[Tensor]:
    return [outputs] if isinstance(outputs, Tensor) else list(outputs)


def compare_with_onnxruntime(model: nn.Module, path: str, sizes: Sequence[tuple[int, int]],
                             seed: int = 0) -> list[OutputError]:
    """Run ``path`` in onnxruntime and ``model`` in PyTorch on the same random inputs.

    One :class:`OutputError` per size and output; an output of another shape
    than PyTorch's has infinite errors.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    graph_input = session.get_inputs()[0]
    names = [output.name for output in session.get_outputs()]
    batch, channels = graph_input.shape[:2]
    generator = torch.Generator().manual_seed(seed)
    errors = []
    for size in sizes:
        x = torch.randn(batch, channels, *size, generator=generator)
        with torch.no_grad():
            expected = [t.float().numpy() for t in _as_list(model(x))]
        got = session.run(None, {graph_input.name: x.numpy()})
        for name, ref, out in zip(names, expected, got):
            if ref.shape != out.shape:
                errors.append(OutputError(tuple(size), name, float('inf'), float('inf')))
                continue
            max_abs = float(np.abs(ref - out).max()) if ref.size else 0.0
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            errors.append(OutputError(tuple(size), name, max_abs,
                                      max_abs / scale if scale > 0 else max_abs))
    return errors
