"""Fast float16 matmuls and convolutions on CPU, for tests only.

Under ``torch.autocast('cpu', dtype=torch.float16)`` the matmuls and
convolutions get float16 operands, and CPU kernels for float16 GEMM/conv are
scalar fallbacks (``_slow_conv2d_*``, a generic ``mm``): a whole VVT at
1024x1024 takes minutes instead of seconds. :class:`EmulatedHalfMatmul`
intercepts those ops below autograd and autocast, lifts their float16 operands
to float32, runs the fast float32 kernel and rounds every floating output back
to float16.

That is the contract of CUDA's float16 GEMMs and convolutions (cuBLAS and
cuDNN accumulate in float32): float16 inputs, float32 accumulation, one
rounding of the result to float16. So the values that enter and leave each op,
its range, and overflow to ``inf`` when a result passes 65504 (what the fp16
tests look for) are those of real float16 execution. Against the native CPU
float16 kernels: matmuls agree to the bit on >99% of elements (only the
summation order differs); the native conv input-gradient also rounds its
intermediate columns to float16, so it is up to ~2.5x less accurate than this.
Every other op (norms, activations, element-wise maths) still runs natively in
whatever dtype autocast gave it. The model code is untouched: only the tests
enter the mode.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

aten = torch.ops.aten

# Every aten op that a linear, matmul or conv (and their backward) reaches
# below autograd; the composite ones (linear, matmul, conv2d) decompose into these.
EMULATED_OPS = frozenset({
    aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
    aten.addbmm.default, aten.addmv.default, aten.mv.default, aten.dot.default,
    aten.convolution.default, aten.convolution_backward.default,
})
# Names that must never run natively in float16 while the mode is active.
SLOW_NAME_PARTS = ('mm', 'mv', 'dot', 'conv')


def _is_cpu_half(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.float16 and t.device.type == 'cpu'


def _to_float(t: object) -> object:
    return t.float() if _is_cpu_half(t) else t


def _to_half(t: object) -> object:
    """Round a float32 result once to float16 (every output of an emulated op)."""
    return t.half() if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t


class EmulatedHalfMatmul(TorchDispatchMode):
    """Run CPU float16 matmuls/convs as float32 compute with float16 in and out.

    Attributes:
        emulated: op name -> calls that were emulated.
        native_half: op name -> other calls that had a CPU float16 tensor
            argument (recorded only with ``audit=True``), to show that no
            slow float16 kernel escaped the mode.
    """

    def __init__(self, audit: bool = False) -> None:
        super().__init__()
        self.audit = audit
        self.emulated: Counter[str] = Counter()
        self.native_half: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in EMULATED_OPS:
            if any(_is_cpu_half(a) for a in tree_leaves((args, kwargs))):
                self.emulated[func.overloadpacket.__name__] += 1
                out = func(*tree_map(_to_float, args), **tree_map(_to_float, kwargs))
                return tree_map(_to_half, out)
        elif self.audit and any(_is_cpu_half(a) for a in tree_leaves((args, kwargs))):
            self.native_half[func.overloadpacket.__name__] += 1
        return func(*args, **kwargs)

    def escaped_slow_ops(self) -> list[str]:
        """Ops that ran natively in float16 and look like a matmul or a conv."""
        return sorted(name for name in self.native_half
                      if any(part in name for part in SLOW_NAME_PARTS))
