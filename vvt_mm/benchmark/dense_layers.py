"""A model's linear and conv layers alone, timed at the shapes and layouts it runs them.

The GEMM-rate bound (:func:`~vvt_mm.benchmark.official.dense_floor_ms`)
prices every multiply-add at the large square GEMM's rate, which layers
with 48-160 wide operands never reach (on the CPUs we measured, 0.5-0.9 of
it). Timing the layers themselves gives a tighter bound that is still a
bound: a forward holds these calls and more, so no VVT-S built from the same
layers runs faster than they do alone.

:func:`record_dense_calls` runs one forward+backward under a dispatch mode
and keeps the signature of every forward ``addmm``, ``mm`` and
``convolution`` -- shapes, strides, non-tensor arguments, whether an operand
was the input image (its gradient is never computed), and the layout the
output's gradient arrives in (a patch embedding's NCHW output gets its
gradient channels-last from the tokens it is flattened into).
:class:`DenseReplay` then calls the same aten ops on random tensors of those
signatures, forward only or each call with its backward; repeated signatures
(the blocks of a stage) share their tensors.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .measurement import forward_backward

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
    grad_stride: tuple[int, ...]  # of the output's gradient in backward


class _Recorder(TorchDispatchMode):

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image_ptr = image.data_ptr()
        self.calls: list[dict] = []
        self.in_forward = True  # backward's own mm calls are not layers
        # A conv's backward names its input and weight: the forward call they were.
        self.conv_at: dict[tuple[int, int], int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in DENSE_OPS and self.in_forward and not kwargs:
            operands = tuple(
                _Operand(tuple(a.shape), tuple(a.stride()), a.data_ptr() == self.image_ptr)
                if isinstance(a, torch.Tensor) else None for a in args)
            # Lists (a conv's stride, padding) as tuples: calls are dict keys.
            others = tuple(None if isinstance(a, torch.Tensor) else
                           tuple(a) if isinstance(a, list) else a for a in args)
            if func is torch.ops.aten.convolution.default:
                self.conv_at[(args[0].data_ptr(), args[1].data_ptr())] = len(self.calls)
            self.calls.append(dict(op=func, operands=operands, others=others,
                                   out_shape=tuple(out.shape), out_stride=tuple(out.stride()),
                                   grad_stride=tuple(out.stride())))
        elif func is torch.ops.aten.convolution_backward.default:
            grad, inp, weight = args[:3]
            at = self.conv_at.get((inp.data_ptr(), weight.data_ptr()))
            if at is not None:
                self.calls[at]['grad_stride'] = tuple(grad.stride())
        return out


def record_dense_calls(model: torch.nn.Module, image: torch.Tensor) -> list[DenseCall]:
    """The forward dense calls of one ``model(image)`` forward+backward, in order.

    Linear layers' gradients arrive in their outputs' (contiguous) layout; a
    conv's is read off its backward.
    """
    recorder = _Recorder(image)

    def forward():
        out = model(image)
        recorder.in_forward = False
        return out

    with recorder:
        forward_backward(forward)
    model.zero_grad(set_to_none=True)
    return [DenseCall(**call) for call in recorder.calls]


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
        self._weight_at: dict[DenseCall, int | None] = {}  # the linear weight used via .t()
        self._grads: dict[DenseCall, torch.Tensor] = {}
        for call in dict.fromkeys(calls):
            weight_at = len(call.operands) - 1 if self._has_linear_weight(call) else None
            leaves = []
            for i, operand in enumerate(call.operands):
                if operand is None:
                    leaves.append(None)
                    continue
                shape, stride = operand.shape, operand.stride
                leaf = rand(shape[::-1], stride[::-1]) if i == weight_at else rand(shape, stride)
                leaves.append(leaf.requires_grad_(not operand.is_image))
            self._leaves[call], self._weight_at[call] = leaves, weight_at
            self._grads[call] = rand(call.out_shape, call.grad_stride)

    @staticmethod
    def _has_linear_weight(call: DenseCall) -> bool:
        """``mm(x, w.t())`` or ``addmm(bias, x, w.t())`` with a contiguous ``w``."""
        if call.op is torch.ops.aten.convolution.default:
            return False
        weight = call.operands[-1]
        return len(weight.shape) == 2 and weight.stride == (1, weight.shape[0])

    def _args(self, call: DenseCall) -> list:
        weight_at = self._weight_at[call]
        return [other if leaf is None else leaf.t() if i == weight_at else leaf
                for i, (leaf, other) in enumerate(zip(self._leaves[call], call.others))]

    def forward(self) -> None:
        """Every recorded call once, without autograd."""
        with torch.no_grad():
            for call in self.calls:
                call.op(*self._args(call))

    def forward_backward(self) -> None:
        """Every recorded call with its backward (input and weight gradients)."""
        for call in self.calls:
            for leaf in self._leaves[call]:
                if leaf is not None:
                    leaf.grad = None
            call.op(*self._args(call)).backward(self._grads[call])

    def calls_ms(self, timed: Callable[[Callable[[], object]], float],
                 tries: int) -> tuple[float, float]:
        """Best forward and forward+backward time of the whole sequence (one warm-up each)."""
        timed(self.forward)
        fwd = min(timed(self.forward) for _ in range(tries))
        timed(self.forward_backward)
        both = min(timed(self.forward_backward) for _ in range(tries))
        return fwd, both
