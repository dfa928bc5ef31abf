"""ViTAEv2 cells equal their written-out formulas (float64, attention as a black box)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vvt_mm.models.layers import NormalCell, ReductionCell
from vvt_mm.models.layers.vitaev2_cells import pcm_strides


def randomise(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if 'weight' in name else 0.1))
        for name, b in module.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(torch.rand_like(b) + 0.5)
    return module.double().eval()


def ln(t, norm):
    return F.layer_norm(t.permute(0, 2, 3, 1), t.shape[1:2], norm.weight, norm.bias,
                        norm.eps).permute(0, 3, 1, 2)


def mlp(t, ffn):
    t = t.permute(0, 2, 3, 1)
    t = F.gelu(t @ ffn.fc1.weight.T + ffn.fc1.bias) @ ffn.fc2.weight.T + ffn.fc2.bias
    return t.permute(0, 3, 1, 2)


def pcm(t, seq, strides):
    for conv_i, bn_i, stride in ((0, 1, strides[0]), (3, 4, strides[1])):
        conv, bn = seq[conv_i], seq[bn_i]
        t = F.conv2d(t, conv.weight, conv.bias, stride, 1, groups=conv.groups)
        t = F.silu(F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                False, 0., bn.eps))
    return F.conv2d(t, seq[6].weight, seq[6].bias, strides[2], 1, groups=seq[6].groups)


def test_normal_cell_is_shortcut_plus_attention_plus_pcm_then_mlp():
    cell = randomise(NormalCell(8, 2, mlp_ratio=2., groups=2, window_size=3))
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    cpe = F.conv2d(x, cell.cpe.weight, cell.cpe.bias, padding=1, groups=8)
    y = x + cell.attn(ln(x + cpe, cell.norm1)) + pcm(x, cell.pcm, (1, 1, 1))
    expected = y + mlp(ln(y, cell.norm2), cell.ffn)
    assert cell.norm1.eps == 1e-6
    with torch.no_grad():
        torch.testing.assert_close(cell(x), expected)


@pytest.mark.parametrize('stride,kernel,dilations,hw', [(4, 7, (1, 2, 3, 4), (16, 24)),
                                                        (2, 3, (1, 2, 3), (6, 10))])
def test_reduction_cell_is_prm_attention_plus_strided_pcm_then_mlp(stride, kernel, dilations,
                                                                   hw):
    cell = randomise(ReductionCell(4, 6, 8, stride, kernel, dilations, num_heads=2, groups=2,
                                   window_size=3))
    x = torch.randn(1, 4, *hw, dtype=torch.float64)
    # PRM: one conv per dilation (official padding), GELU, concatenated in order.
    prm = torch.cat([
        F.gelu(F.conv2d(x, conv.weight, conv.bias, stride,
                        math.ceil(((kernel - 1) * d + 1 - stride) / 2), d))
        for conv, d in zip(cell.prm.convs, dilations)
    ], 1)
    prm = prm + F.conv2d(prm, cell.cpe.weight, cell.cpe.bias, padding=1, groups=prm.shape[1])
    y = cell.attn(ln(prm, cell.norm1)) + pcm(x, cell.pcm, pcm_strides(stride))
    expected = y + mlp(ln(y, cell.norm2), cell.ffn)
    assert cell.norm1.eps == 1e-5 and cell.ffn.fc1.out_features == 8  # MLP ratio 1
    with torch.no_grad():
        out = cell(x)
    assert out.shape == (1, 8, hw[0] // stride, hw[1] // stride)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('stride,hw', [(4, (13, 18)), (4, (1, 2)), (2, (7, 5)), (2, (1, 1))])
def test_reduction_cell_output_is_ceil_of_size_over_stride_for_any_size(stride, hw):
    cell = ReductionCell(3, 4, 8, stride, 7 if stride == 4 else 3,
                         (1, 2, 3, 4) if stride == 4 else (1, 2), num_heads=2).eval()
    out = cell(torch.randn(1, 3, *hw))
    assert out.shape == (1, 8, -(-hw[0] // stride), -(-hw[1] // stride))


def test_pcm_strides_multiply_to_the_ratio_and_wide_pcm_doubles_tokens():
    assert pcm_strides(4) == (2, 2, 1) and pcm_strides(2) == (2, 1, 1)
    cell = ReductionCell(3, 4, 8, 2, 3, (1, 2), num_heads=2, wide_pcm=True)
    assert [cell.pcm[i].out_channels for i in (0, 3, 6)] == [16, 16, 8]
    with pytest.raises(ValueError, match='ratio'):
        pcm_strides(3)
