"""Pre-norm residual block over a token grid, with optional checkpointing."""
from __future__ import annotations

import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import Tensor


class PreNormBlock(BaseModule):
    """``x + drop_path(attn(norm1(x)))`` then ``x + drop_path(ffn(norm2(x)))``.

    Subclasses build ``norm1``, ``attn``, ``norm2``, ``ffn`` and ``drop_path``
    (both ``attn`` and ``ffn`` take ``(tokens, hw_shape)``) and set
    ``with_cp``; with it, activations are recomputed in backward to save
    memory.
    """

    with_cp: bool = False

    def _forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return x + self.drop_path(self.ffn(self.norm2(x), hw_shape))

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)
