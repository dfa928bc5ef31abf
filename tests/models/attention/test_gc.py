"""GCNet context block against its three steps written out."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import GlobalContextAttention


def test_output_is_the_transformed_attention_pooled_context_in_float64():
    torch.manual_seed(0)
    mixer = GlobalContextAttention(16, 2, ratio=0.25).double()
    x = torch.randn(2, 5 * 7, 16, dtype=torch.float64)
    fc1, norm, _, fc2 = mixer.channel_add
    logits = x @ mixer.conv_mask.weight.T + mixer.conv_mask.bias  # (B, N, 1)
    weights = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    context = (weights * x).sum(1)  # (B, C)
    hidden = context @ fc1.weight.T + fc1.bias
    mean, var = hidden.mean(-1, keepdim=True), hidden.var(-1, unbiased=False, keepdim=True)
    hidden = (hidden - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    expected = F.relu(hidden) @ fc2.weight.T + fc2.bias
    out = mixer(x, (5, 7))
    torch.testing.assert_close(out, expected[:, None].expand_as(x))


def test_context_is_query_independent_and_permutation_invariant():
    torch.manual_seed(0)
    mixer = GlobalContextAttention(16, 1, ratio=0.25).double()
    x = torch.randn(1, 24, 16, dtype=torch.float64)
    out = mixer(x, (4, 6))
    torch.testing.assert_close(out, out[:, :1].expand_as(out))
    torch.testing.assert_close(mixer(x[:, torch.randperm(24)], (4, 6)), out)


def test_default_bottleneck_is_gcnet_r16():
    assert GlobalContextAttention(96, 1).channel_add[0].out_features == 6


def test_a_one_channel_bottleneck_is_rejected():
    with pytest.raises(ValueError, match='bottleneck'):
        GlobalContextAttention(16, 1)  # 16 / 16 = 1 channel
