"""Vicinity Attention Block token mixer: Feature Reduction Attention + FPC."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.ops.clamped_gate import clamped_feature_preserving
from vvt_mm.ops.vicinity_reference import abs_clamp
from vvt_mm.registry import ATTENTIONS

from ..layers.kv_reduction import KVReductionMixin
from ..layers.tracing import is_exporting
from .heads import merge_heads, split_heads
from .vicinity_dispatch import IMPLS, vicinity_attention


@ATTENTIONS.register_module(name=['vicinity', 'VicinityAttention'])
class VicinityAttention(KVReductionMixin, BaseModule):
    """Vicinity attention with feature reduction and a feature preserving gate.

    q, k and v are projected to ``embed_dims / feature_reduction`` channels
    (FRA), mixed by :func:`vicinity_attention`, projected back, and re-scaled by
    ``1 + sigmoid(FC(ReLU(FC(mean_tokens(x)))))`` (FPC), which restores the
    channel statistics the reduction discarded.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads (split the reduced channels).
        feature_reduction: FR ratio of the paper; 2 for every VVT variant.
        sr_ratio: keys and values come from an ``r x r`` strided conv of the
            input (VVT_sr, paper Fig. 8); 1 disables it.
        clamp: apply the official ``abs_clamp`` points (keeps converted
            official weights exact and fp16 finite).
        impl: attention core implementation, one of ``auto``, ``torch``,
            ``reference``, ``triton``.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feature_reduction: int = 2,
                 sr_ratio: int = 1,
                 clamp: bool = True,
                 impl: str = 'auto',
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        inner_dims = embed_dims // feature_reduction
        if embed_dims % feature_reduction or inner_dims % num_heads:
            raise ValueError(
                f'embed_dims={embed_dims} / feature_reduction={feature_reduction} must '
                f'be an integer divisible by num_heads={num_heads}')
        if impl not in IMPLS:
            raise ValueError(f'unknown impl {impl!r}; choose one of {IMPLS}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.inner_dims = inner_dims
        self.clamp = clamp
        self.impl = impl

        self.q_proj = nn.Linear(embed_dims, inner_dims)
        self.k_proj = nn.Linear(embed_dims, inner_dims)
        self.v_proj = nn.Linear(embed_dims, inner_dims)
        self.out_proj = nn.Linear(inner_dims, embed_dims)
        self.fpc_gate = nn.Sequential(
            nn.Linear(embed_dims, embed_dims, bias=False), nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims, bias=False), nn.Sigmoid())
        self.init_kv_reduction(embed_dims, sr_ratio)

    # The reduced key/value tokens and their grid (name kept for callers).
    _reduced_tokens = KVReductionMixin.reduce_kv

    def attention_core(self, q: Tensor, k: Tensor, v: Tensor, q_hw: tuple[int, int],
                       kv_hw: tuple[int, int]) -> Tensor:
        """Mix ``(B, heads, N, d)`` heads; the one step variants override."""
        return vicinity_attention(q, k, v, q_hw, kv_hw, clamp=self.clamp, impl=self.impl)

    def project_qkv(self, x: Tensor, kv_tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q_proj(x)``, ``k_proj(kv_tokens)``, ``v_proj(kv_tokens)`` in fewer GEMMs.

        Projections of the same tokens run as one linear layer on the stacked
        weights: a ``C x 3C/2`` GEMM (and one for each gradient) instead of
        three ``C x C/2`` ones, whose narrow outputs run MKL well below its
        rate. The parameters (and checkpoint keys) stay the three layers'. A
        projection replaced by another module (an adapter, a hook) runs as it is.
        """
        shared = kv_tokens is x
        layers = (self.q_proj, self.k_proj, self.v_proj) if shared else (self.k_proj,
                                                                          self.v_proj)
        if not all(_plain_linear(m) for m in layers):
            return self.q_proj(x), self.k_proj(kv_tokens), self.v_proj(kv_tokens)
        stacked = F.linear(kv_tokens, torch.cat([m.weight for m in layers]),
                           _stacked_bias(layers))
        outs = stacked.split(self.inner_dims, dim=-1)
        return outs if shared else (self.q_proj(x), *outs)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens laid out row-major on ``hw_shape``."""
        gate = self.fpc_gate(x.mean(dim=1)).unsqueeze(1)
        kv_tokens, kv_hw = self.reduce_kv(x, hw_shape)
        q, k, v = (split_heads(t, self.num_heads) for t in self.project_qkv(x, kv_tokens))
        out = self.attention_core(q, k, v, tuple(hw_shape), kv_hw)
        out = self.out_proj(merge_heads(out))
        if self.clamp and self._sigmoid_gate and out.dtype == gate.dtype and _eager():
            return clamped_feature_preserving(out, gate)  # the lines below, in fewer passes
        if self.clamp:
            out = abs_clamp(out)
        out = out + out * gate
        if self.clamp:
            out = abs_clamp(out)
        return out

    @property
    def _sigmoid_gate(self) -> bool:
        # The fused form needs gate >= 0, which a sigmoid last layer guarantees.
        return isinstance(self.fpc_gate, nn.Sequential) and isinstance(self.fpc_gate[-1],
                                                                       nn.Sigmoid)


def _eager() -> bool:
    """Not under a compiler, an exporter or a tracer (they take the plain ops)."""
    return not (torch.compiler.is_compiling() or is_exporting() or torch.jit.is_tracing())


def _plain_linear(m: nn.Module) -> bool:
    """An ``nn.Linear`` whose call is its ``F.linear`` (no subclass, no hooks)."""
    return (type(m) is nn.Linear and not m._forward_hooks and not m._forward_pre_hooks
            and not nn.modules.module._global_forward_hooks
            and not nn.modules.module._global_forward_pre_hooks)


def _stacked_bias(layers: tuple[nn.Linear, ...]) -> Tensor | None:
    """The layers' biases stacked like their weights (zeros where one has none)."""
    if all(m.bias is None for m in layers):
        return None
    return torch.cat([m.weight.new_zeros(m.out_features) if m.bias is None else m.bias
                      for m in layers])
