"""Vanilla softmax attention against the explicit N x N softmax matrix."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import SoftmaxAttention


def explicit_softmax_attention(mixer: SoftmaxAttention, x: torch.Tensor) -> torch.Tensor:
    bsz, n, c = x.shape
    h = mixer.num_heads
    d = c // h
    w_q, w_k, w_v = mixer.qkv.weight.split(c)
    b_q, b_k, b_v = mixer.qkv.bias.split(c)
    out = torch.empty_like(x)
    for head in range(h):
        cols = slice(head * d, (head + 1) * d)
        q = x @ w_q[cols].T + b_q[cols]
        k = x @ w_k[cols].T + b_k[cols]
        v = x @ w_v[cols].T + b_v[cols]
        scores = torch.exp(q @ k.transpose(1, 2) / math.sqrt(d))
        out[..., cols] = (scores / scores.sum(-1, keepdim=True)) @ v
    return out @ mixer.proj.weight.T + mixer.proj.bias


@pytest.mark.parametrize('hw', [(5, 7), (3, 11)])
def test_output_equals_explicit_softmax_matrix_in_float64(hw):
    torch.manual_seed(0)
    mixer = SoftmaxAttention(12, 3).double().eval()
    x = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.float64)
    torch.testing.assert_close(mixer(x, hw), explicit_softmax_attention(mixer, x))


def test_attention_dropout_is_applied_only_in_training():
    torch.manual_seed(0)
    mixer = SoftmaxAttention(8, 2, attn_drop=0.5)
    x = torch.randn(1, 20, 8)
    mixer.eval()
    torch.testing.assert_close(mixer(x, (4, 5)), mixer(x, (4, 5)))
    mixer.train()
    assert not torch.allclose(mixer(x, (4, 5)), mixer(x, (4, 5)))


def test_embed_dims_not_divisible_by_heads_is_rejected():
    with pytest.raises(ValueError, match='divisible by num_heads'):
        SoftmaxAttention(10, 3)
