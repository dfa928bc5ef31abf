"""A model's linear and conv layers alone, timed at the shapes and layouts it runs them.

The GEMM-rate bound (:func:`~vvt_mm.benchmark.official.dense_floor_ms`)
prices every multiply-add at the large square GEMM's rate, which layers
with 48-160 wide operands never reach (on the CPUs we measured, 0.5-0.9 of
it). Timing the layers themselves gives a tighter bound that is still a
bound: a forward holds these calls and more, so no VVT-S built from the same
layers runs faster than they do alone.

:func:`record_dense_calls` runs one forward (no grad) under a dispatch mode
and keeps the signature of every ``addmm``, ``mm`` and ``convolution`` --
shapes, strides, non-tensor arguments, and whether an operand was the input
image (its gradient is never computed). :class:`DenseReplay` then calls the
same aten ops on random tensors of those signatures, forward only or each
call with its backward; repeated signatures (the blocks of a stage) share
their tensors.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['DENSE_OPS', 'DenseCall', 'record_dense_calls', 'DenseReplay']

# The aten ops a linear layer (``addmm``; ``mm`` without bias) or a conv
# layer lowers to on CPU and CUDA.
DENSE_OPS = (torch.ops.aten.addmm.default, torch.ops.aten.mm.default,
             torch.ops.aten.convolution.default)


@dataclass(frozen=True)
class _Operand:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    is_image: bool


@dataclass(frozen=True)
class DenseCall:
    """One dense aten call: its op, tensor operands, other arguments and output layout."""

    op: torch._ops.OpOverload
    operands: tuple[_Operand | None, ...]  # None: a non-tensor argument, kept in ``others``
    others: tuple
    out_shape: tuple[int, ...]
    out_stride: tuple[int, ...]


class _Recorder(TorchDispatchMode):

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image_ptr = image.data_ptr()
        self.calls: list[DenseCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in DENSE_OPS and not kwargs:
            operands = tuple(
                _Operand(tuple(a.shape), tuple(a.stride()), a.data_ptr() == self.image_ptr)
                if isinstance(a, torch.Tensor) else None for a in args)
            # Lists (a conv's stride, padding) as tuples: calls are dict keys.
            others = tuple(None if isinstance(a, torch.Tensor) else
                           tuple(a) if isinstance(a, list) else a for a in args)
            self.calls.append(DenseCall(func, operands, others, tuple(out.shape),
                                        tuple(out.stride())))
        return out


def record_dense_calls(model: torch.nn.Module, image: torch.Tensor) -> list[DenseCall]:
    """The dense calls of one ``model(image)`` forward, in order."""
    recorder = _Recorder(image)
    with torch.no_grad(), recorder:
        model(image)
    return recorder.calls


class DenseReplay:
    """The recorded calls on random tensors: :meth:`forward` and :meth:`forward_backward`.

    Operands get the recorded strides, except that the transposed weight of a
    linear layer (``addmm``/``mm``'s second operand with strides ``(1, K)``)
    is a contiguous leaf used through ``.t()``, as ``nn.Linear``'s weight is,
    so its gradient lands in the same layout as in the model. Every operand
    but the image needs a gradient in :meth:`forward_backward`.
    """

    def __init__(self, calls: list[DenseCall], device: torch.device) -> None:
        gen = torch.Generator().manual_seed(0)

        def rand(shape: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
            t = torch.empty_strided(shape, stride)
            return t.copy_(torch.randn(shape, generator=gen)).to(device)

        self.calls = calls
        self._leaves: dict[DenseCall, list[torch.Tensor | None]] = {}
        self._grads: dict[DenseCall, torch.Tensor] = {}
        for call in dict.fromkeys(calls):
            leaves = []
            for i, operand in enumerate(call.operands):
                if operand is None:
                    leaves.append(None)
                elif self._is_linear_weight(call, i):
                    leaves.append(rand(operand.shape[::-1], operand.stride[::-1]))
                else:
                    leaves.append(rand(operand.shape, operand.stride))
            self._leaves[call] = leaves
            self._grads[call] = rand(call.out_shape, call.out_stride)

    @staticmethod
    def _is_linear_weight(call: DenseCall, index: int) -> bool:
        if call.op is torch.ops.aten.convolution.default:
            return False
        weight = call.operands[-1]  # mm(x, w.t()) and addmm(bias, x, w.t())
        return (index == len(call.operands) - 1 and len(weight.shape) == 2
                and weight.stride == (1, weight.shape[0]))

    def _args(self, call: DenseCall) -> list:
        args = []
        for i, (leaf, other) in enumerate(zip(self._leaves[call], call.others)):
            if leaf is None:
                args.append(other)
            else:
                args.append(leaf.t() if self._is_linear_weight(call, i) else leaf)
        return args

    def forward(self) -> None:
        """Every recorded call once, without autograd."""
        with torch.no_grad():
            for call in self.calls:
                call.op(*self._args(call))

    def forward_backward(self) -> None:
        """Every recorded call with its backward (input and weight gradients)."""
        for call in self.calls:
            leaves = self._leaves[call]
            for leaf, operand in zip(leaves, call.operands):
                if leaf is not None:
                    leaf.grad = None
                    leaf.requires_grad_(not operand.is_image)
            call.op(*self._args(call)).backward(self._grads[call])

    def calls_ms(self, timed: Callable[[Callable[[], object]], float],
                 tries: int) -> tuple[float, float]:
        """Best forward and forward+backward time of the whole sequence (one warm-up each)."""
        timed(self.forward)
        fwd = min(timed(self.forward) for _ in range(tries))
        timed(self.forward_backward)
        both = min(timed(self.forward_backward) for _ in range(tries))
        return fwd, both
