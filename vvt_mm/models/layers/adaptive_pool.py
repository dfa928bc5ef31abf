"""Adaptive average pooling that also exports with symbolic H, W."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair


def pooling_matrix(size: int, out: int, like: Tensor) -> Tensor:
    """``(out, size)`` matrix averaging adaptive pooling's windows along one axis.

    Window ``g`` covers ``[floor(g * size / out), ceil((g + 1) * size / out))``,
    as in ``F.adaptive_avg_pool2d``.
    """
    index = torch.arange(out, device=like.device)
    start = index * size // out
    end = ((index + 1) * size + out - 1) // out
    pixel = torch.arange(size, device=like.device)
    inside = (pixel >= start[:, None]) & (pixel < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: Tensor, output_size: int | tuple[int | None, int | None]
                        ) -> Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)``, exportable with symbolic H, W.

    ONNX has no adaptive pooling: torch.onnx lowers it with the windows of the
    traced size, wrong at any other. While exporting the windows are averaged
    by two matrices built from the actual H, W (equal up to rounding); eager
    runs keep the native kernel.
    """
    if not torch.compiler.is_exporting():
        return F.adaptive_avg_pool2d(x, output_size)
    out_h, out_w = _pair(output_size)
    h, w = x.shape[-2], x.shape[-1]
    if out_h is not None:
        x = torch.matmul(pooling_matrix(h, out_h, x), x)
    if out_w is not None:
        x = torch.matmul(x, pooling_matrix(w, out_w, x).transpose(0, 1))
    return x


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` through :func:`adaptive_avg_pool2d`."""

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool2d(x, self.output_size)
