"""Head split/merge shared by the multi-head token mixers."""
from __future__ import annotations

from torch import Tensor


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)``."""
    bsz, num_tokens, channels = x.shape
    return x.view(bsz, num_tokens, num_heads, channels // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, N, d)`` -> ``(B, N, heads * d)``."""
    bsz, heads, num_tokens, head_dims = x.shape
    return x.transpose(1, 2).reshape(bsz, num_tokens, heads * head_dims)


def check_heads(embed_dims: int, num_heads: int, owner: str) -> int:
    """Validate the head split and return the per-head channels."""
    if num_heads < 1 or embed_dims % num_heads:
        raise ValueError(f'{owner}: embed_dims={embed_dims} must be divisible by '
                         f'num_heads={num_heads}')
    return embed_dims // num_heads
