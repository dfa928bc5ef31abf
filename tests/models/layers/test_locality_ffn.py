"""LocalViT's locality FFN equals its written-out formula (float64, eval-mode BN)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vvt_mm.models.layers import LocalityFFN


def hswish(t):
    return t * F.relu6(t + 3) / 6


def bn(t, m):
    return (t - m.running_mean[:, None, None]) / torch.sqrt(
        m.running_var[:, None, None] + m.eps) * m.weight[:, None, None] + m.bias[:, None, None]


def randomize_bn(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def reference(ffn, x, attn):
    """1x1 -> BN -> h-swish -> dw 3x3 -> BN -> h-swish -> [SE|ECA] -> 1x1 -> BN, + x."""
    h = hswish(bn(F.conv2d(x, ffn.expand.conv.weight), ffn.expand.bn))
    h = hswish(bn(F.conv2d(h, ffn.dwconv.conv.weight, padding=1, groups=h.shape[1]),
                  ffn.dwconv.bn))
    pooled = h.mean(dim=(2, 3))
    if attn == 'se':
        se = ffn.channel_attn
        gate = F.relu6(F.linear(F.relu(F.linear(pooled, se.fc1.weight, se.fc1.bias)),
                                se.fc2.weight, se.fc2.bias) + 3) / 6
        h = h * gate[:, :, None, None]
    elif attn == 'eca':
        conv = ffn.channel_attn.conv.weight[0, 0]  # (k, )
        k = conv.numel()
        padded = F.pad(pooled, (k // 2, k // 2))
        mixed = torch.stack([(padded[:, c:c + k] * conv).sum(-1)
                             for c in range(pooled.shape[1])], dim=1)
        h = h * torch.sigmoid(mixed)[:, :, None, None]
    return x + bn(F.conv2d(h, ffn.project.conv.weight), ffn.project.bn)


@pytest.mark.parametrize('attn', ['se', 'eca', None])
def test_locality_ffn_matches_the_written_out_formula(attn):
    torch.manual_seed(0)
    ffn = LocalityFFN(8, mlp_ratio=4, channel_attn=attn, se_reduction=4).double().eval()
    randomize_bn(ffn)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(ffn(x), reference(ffn, x, attn))


def test_se_reduction_is_relative_to_the_hidden_width():
    """LocalViT-T: reduction 192 on 4 x 192 hidden channels squeezes to 4."""
    ffn = LocalityFFN(192, mlp_ratio=4, channel_attn='se', se_reduction=192)
    assert ffn.channel_attn.fc1.weight.shape == (4, 768)
    assert ffn.channel_attn.fc2.weight.shape == (768, 4)
    with pytest.raises(ValueError, match='leaves no channel'):
        LocalityFFN(8, mlp_ratio=1, channel_attn='se', se_reduction=16)


@pytest.mark.parametrize('channels', [16, 768, 1536])
def test_eca_kernel_follows_eca_net(channels):
    t = int(abs((math.log2(channels) + 1) / 2))
    ffn = LocalityFFN(channels // 4, mlp_ratio=4, channel_attn='eca')
    assert ffn.channel_attn.conv.kernel_size[0] == (t if t % 2 else t + 1)


def test_convolutions_have_no_bias_and_the_residual_is_inside():
    ffn = LocalityFFN(8, mlp_ratio=2).eval()
    assert all(m.bias is None for m in ffn.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        ffn.project.bn.weight.zero_()
        ffn.project.bn.bias.zero_()
    x = torch.randn(1, 8, 4, 3)
    torch.testing.assert_close(ffn(x), x)


def test_unknown_channel_attention_is_refused():
    with pytest.raises(ValueError, match="'se', 'eca'"):
        LocalityFFN(8, channel_attn='cbam')


@pytest.mark.parametrize('batch', [1, 2])
def test_input_gradient_is_right_when_the_output_is_read_as_tokens(batch):
    """Blocks read the map as ``flatten(2).transpose(1, 2)``; for a batch of one that
    hands eval-mode BatchNorm a gradient layout its CPU backward gets wrong (torch
    2.x), so the FFN passes a contiguous gradient on. Compared with the autograd
    gradient of the written-out formula (no BatchNorm module involved)."""
    torch.manual_seed(0)
    ffn = LocalityFFN(8, mlp_ratio=2, channel_attn='se', se_reduction=2).double().eval()
    randomize_bn(ffn)
    x = torch.randn(batch, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(batch, 6, 8, dtype=torch.float64)
    grads = []
    for fn in (ffn, lambda t: reference(ffn, t, 'se')):
        (grad, ) = torch.autograd.grad((fn(x).flatten(2).transpose(1, 2) * weights).sum(), x)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1])
