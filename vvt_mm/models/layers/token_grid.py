"""Tokens ``(B, H*W, C)`` <-> NCHW maps ``(B, C, H, W)``, row-major on the grid.

Transformer parts (norms, linears, attention) work on tokens; convolutions
and pooling on maps. Both conversions are views where the strides allow: a
map made from tokens has channels-last strides, and tokens read back from a
map are its transposed view (no copy either way).
"""
from __future__ import annotations

from torch import Tensor


def nlc_to_nchw(x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
    """``(B, H*W, C)`` tokens laid out row-major on ``hw_shape`` -> ``(B, C, H, W)``."""
    bsz, _, channels = x.shape
    return x.transpose(1, 2).reshape(bsz, channels, *hw_shape)


def nchw_to_nlc(x: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)`` tokens, row-major."""
    return x.flatten(2).transpose(1, 2)
