"""LVT's CSA and RASA equal explicit float64 references written from the paper/official code."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vvt_mm.models.layers import (
    AtrousDepthwiseConv,
    ConvolutionalSelfAttention,
    RecursiveAtrousSelfAttention,
)


def csa_reference(m: ConvolutionalSelfAttention, x: torch.Tensor, hw: tuple[int, int]):
    """Window by window: pooled token -> per-head 9x9 attention over a 3x3 neighbourhood.

    Window (i, j) is centred at pixel (2i, 2j); its positions are (2i-1+a, 2j-1+b).
    Each position's value is ``value_weight[p] @ x`` (zero outside the map), outputs
    are summed back onto their pixels, then projected.
    """
    bsz, _, c = x.shape
    h, w = hw
    heads, d = m.num_heads, c // m.num_heads
    grid = x.reshape(bsz, h, w, c)
    acc = torch.zeros_like(grid)
    for i in range((h + 1) // 2):
        for j in range((w + 1) // 2):
            patch = grid[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
            pooled = patch.reshape(bsz, -1, c).mean(1)  # only in-map pixels count
            attn = (m.attn_logits(pooled).reshape(bsz, heads, 9, 9) * d ** -0.5).softmax(-1)
            coords = [(2 * i - 1 + a, 2 * j - 1 + b) for a in range(3) for b in range(3)]
            vals = torch.stack([
                grid[:, y, xx] @ m.value_weight[p].T if 0 <= y < h and 0 <= xx < w
                else torch.zeros(bsz, c, dtype=x.dtype) for p, (y, xx) in enumerate(coords)
            ], dim=1).reshape(bsz, 9, heads, d)
            out = torch.einsum('bhpq,bqhd->bphd', attn, vals).reshape(bsz, 9, c)
            for p, (y, xx) in enumerate(coords):
                if 0 <= y < h and 0 <= xx < w:
                    acc[:, y, xx] += out[:, p]
    return m.proj(acc.reshape(bsz, h * w, c))


@pytest.mark.parametrize('hw', [(4, 6), (5, 7), (1, 3)])
def test_csa_equals_the_window_by_window_reference(hw):
    torch.manual_seed(0)
    m = ConvolutionalSelfAttention(8, num_heads=2).double()
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    torch.testing.assert_close(m(x, hw), csa_reference(m, x, hw))


def test_csa_parameters_follow_the_official_shapes():
    m = ConvolutionalSelfAttention(64, num_heads=2)
    assert m.attn_logits.weight.shape == (81 * 2, 64)
    assert m.value_weight.shape == (9, 64, 64)


def attend_reference(m: RecursiveAtrousSelfAttention, x, hw):
    bsz, n, c = x.shape
    heads, d = m.num_heads, c // m.num_heads
    q = F.linear(x, m.q.weight).transpose(1, 2).reshape(bsz, c, *hw)
    q = sum(F.silu(F.conv2d(q, m.ds.weight, padding=r, dilation=r, groups=c))
            for r in (1, 3, 5))
    q = q.flatten(2).transpose(1, 2)
    src = x
    if m.sr_ratio > 1:
        src = F.conv2d(x.transpose(1, 2).reshape(bsz, c, *hw), m.sr.weight, m.sr.bias,
                       stride=m.sr_ratio).flatten(2).transpose(1, 2)
        src = F.layer_norm(src, (c, ), m.norm.weight, m.norm.bias, 1e-5)
    kv = F.linear(src, m.kv.weight)
    k, v = kv[..., :c], kv[..., c:]
    out = torch.zeros_like(x)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        attn = (q[..., s] @ k[..., s].transpose(1, 2) / d ** 0.5).softmax(-1)
        out[..., s] = attn @ v[..., s]
    return m.proj(out)


@pytest.mark.parametrize('sr_ratio,hw', [(1, (3, 5)), (2, (4, 6)), (4, (8, 4))])
def test_rasa_is_silu_of_attention_of_silu_of_attention_plus_input(sr_ratio, hw):
    torch.manual_seed(0)
    m = RecursiveAtrousSelfAttention(8, num_heads=2, sr_ratio=sr_ratio).double()
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    first = F.silu(attend_reference(m, x, hw))
    expected = F.silu(attend_reference(m, first + x, hw))
    torch.testing.assert_close(m(x, hw), expected)
    single = RecursiveAtrousSelfAttention(8, num_heads=2, sr_ratio=sr_ratio,
                                          recursions=1).double()
    single.load_state_dict(m.state_dict())
    torch.testing.assert_close(single(x, hw), attend_reference(m, x, hw))


def test_rasa_pads_maps_smaller_than_or_not_multiple_of_the_reduction():
    m = RecursiveAtrousSelfAttention(8, num_heads=2, sr_ratio=4)
    for hw in [(2, 3), (5, 7)]:
        out = m(torch.randn(1, hw[0] * hw[1], 8), hw)
        assert out.shape == (1, hw[0] * hw[1], 8) and torch.isfinite(out).all()


def test_atrous_conv_shares_one_depthwise_kernel_across_dilations():
    m = AtrousDepthwiseConv(6, dilations=(1, 3, 5))
    assert [p.shape for p in m.parameters()] == [(6, 1, 3, 3)]
    x = torch.randn(1, 6, 9, 8)
    expected = sum(F.silu(F.conv2d(x, m.weight, padding=r, dilation=r, groups=6))
                   for r in (1, 3, 5))
    torch.testing.assert_close(m(x), expected)
