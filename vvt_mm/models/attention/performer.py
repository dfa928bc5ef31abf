"""Performer FAVOR+ attention (the "Performer" row of VVT Table VII)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from vvt_mm.registry import ATTENTIONS

from .heads import check_heads, merge_heads, split_heads


def orthogonal_gaussian_features(num_features: int, dims: int,
                                 generator: torch.Generator | None = None) -> Tensor:
    """``(num_features, dims)`` random projection with orthogonal blocks.

    Rows come in blocks of ``dims`` mutually orthogonal directions (QR of a
    Gaussian matrix), each row rescaled to the norm of an independent
    Gaussian vector so its marginal is still ``N(0, I)``: the unbiased,
    lower-variance estimator of FAVOR+ (Performer paper, Sec. 2.4).
    The QR factor is only uniformly (Haar) distributed once its columns are
    multiplied by the signs of ``diag(R)``; without that, LAPACK's sign
    convention tilts the first direction of every block towards a fixed axis
    and the estimate of ``exp(q . k)`` stops converging as ``m`` grows.
    """
    num_blocks = -(-num_features // dims)
    gaussian = torch.randn(num_blocks, dims, dims, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    directions = q.transpose(-2, -1).reshape(num_blocks * dims, dims)[:num_features]
    norms = torch.randn(num_features, dims, generator=generator,
                        dtype=torch.float64).norm(dim=1, keepdim=True)
    return (directions * norms).float()


def favor_features(x: Tensor, projection: Tensor, is_query: bool) -> Tensor:
    """Positive random features ``exp(w.x - |x|^2 / 2) / sqrt(m)`` up to a scale.

    ``x`` must already carry the ``d^(-1/4)`` scaling, so that
    ``E[phi(q) . phi(k)] = exp(q . k / sqrt(d))``. Before the ``exp`` each query
    loses its own maximum and the keys their joint maximum (per batch and
    head); both factors cancel in the attention's normalisation, and they
    keep ``exp`` finite.
    """
    logits = x @ projection.T - 0.5 * x.pow(2).sum(dim=-1, keepdim=True)
    if is_query:
        shift = logits.amax(dim=-1, keepdim=True)
    else:
        shift = logits.amax(dim=(-2, -1), keepdim=True)
    return torch.exp(logits - shift.detach()) / math.sqrt(projection.shape[0])


def performer_attention(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
                        eps: float = 1e-6) -> Tensor:
    """FAVOR+ estimate of ``softmax(q k^T / sqrt(d)) v`` for ``(B, heads, N, d)`` inputs.

    ``phi(q) (phi(k)^T v) / (phi(q) sum_j phi(k_j))`` with ``projection`` of
    shape ``(m, d)``, in ``O(N m d)``; computed in float32 (float64 stays
    float64) even under autocast, because ``exp`` of the logits overflows fp16.
    """
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        scale = q.shape[-1] ** -0.25
        projection = projection.to(work)
        q_feat = favor_features(q.to(work) * scale, projection, is_query=True)
        k_feat = favor_features(k.to(work) * scale, projection, is_query=False)
        kv = k_feat.transpose(-2, -1) @ v.to(work)  # (B, h, m, d)
        den = q_feat @ k_feat.sum(dim=2).unsqueeze(-1)  # (B, h, N, 1)
        out = (q_feat @ kv) / den.clamp_min(eps)
    return out.to(q.dtype)


@ATTENTIONS.register_module(name=['performer', 'PerformerAttention'])
class PerformerAttention(BaseModule):
    """Linear attention that estimates softmax attention with random features.

    ``softmax(q k^T / sqrt(d))`` is replaced by ``phi(q) phi(k)^T`` (FAVOR+,
    positive orthogonal random features), so the output
    ``phi(q) (phi(k)^T v) / (phi(q) sum_j phi(k_j))`` costs ``O(N m d)``.
    The projection is a buffer drawn once at construction (saved with the
    weights, so a loaded model evaluates exactly as it was trained); it is
    shared by the heads and never redrawn in eval mode.

    Args:
        embed_dims: channels of the tokens.
        num_heads: attention heads.
        num_features: random features ``m``; 256 as in the Performer
            paper's experiments (its bound asks ``m = O(d log d)``, i.e.
            about 266 for ``d = 64``).
        redraw_interval: redraw the projection every this many training
            forwards (the paper redraws periodically); 0 keeps it fixed.
        qkv_bias: bias in the joint q/k/v projection.
        eps: lower bound of the normaliser.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_features: int = 256,
                 redraw_interval: int = 0,
                 qkv_bias: bool = True,
                 eps: float = 1e-6,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        head_dims = check_heads(embed_dims, num_heads, type(self).__name__)
        if num_features < 1 or redraw_interval < 0:
            raise ValueError(f'num_features must be >= 1 and redraw_interval >= 0, got '
                             f'{num_features} and {redraw_interval}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = head_dims
        self.num_features = num_features
        self.redraw_interval = redraw_interval
        self.eps = eps
        self._calls_since_redraw = 0
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.register_buffer('projection',
                             orthogonal_gaussian_features(num_features, head_dims))

    @torch.no_grad()
    def redraw_projection(self) -> None:
        """Draw a fresh random projection in place (same device and dtype)."""
        fresh = orthogonal_gaussian_features(self.num_features, self.head_dims)
        self.projection.copy_(fresh.to(self.projection))

    def _maybe_redraw(self) -> None:
        if not self.training or self.redraw_interval == 0:
            return
        self._calls_since_redraw += 1
        if self._calls_since_redraw >= self.redraw_interval:
            self.redraw_projection()
            self._calls_since_redraw = 0

    # Positions play no part, so class tokens may join the grid tokens.
    takes_extra_tokens = True

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """Mix ``(B, N, C)`` tokens; ``hw_shape`` is unused (no positions)."""
        self._maybe_redraw()
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(merge_heads(performer_attention(q, k, v, self.projection, self.eps)))
