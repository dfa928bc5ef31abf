"""Bottom/right zero-padding of NCHW maps to a multiple of a stride."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def padded_size(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``.

    Written as ``ceil(size / multiple) * multiple`` rather than ``size +
    (-size % multiple)``: for a symbolic size the former is visibly a
    multiple, so torch.export can prove that the strided layers after it
    agree on their output sizes.
    """
    return (size + multiple - 1) // multiple * multiple


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``x`` at the bottom/right so that H and W are multiples of ``multiple``.

    The pad runs even when it is zero (then it is a copy): a branch on
    ``H % multiple`` would make ``torch.export`` specialise the graph to the
    remainder of the traced size, and the ONNX file would be wrong at others.
    """
    if multiple == 1:
        return x
    h, w = x.shape[2], x.shape[3]
    return F.pad(x, (0, padded_size(w, multiple) - w, 0, padded_size(h, multiple) - h))
