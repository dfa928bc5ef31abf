"""Varied-size window attention against explicit float64 references.

The references below work in pixel units with loops over windows and heads and
a hand-written bilinear interpolation; they share no code with the module.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vvt_mm.models.layers import VariedSizeWindowAttention, vsa_sampling_grid


def make_vsa(in_dims=6, out_dims=4, heads=2, ws=3, predictors=0., seed=0):
    torch.manual_seed(seed)
    attn = VariedSizeWindowAttention(in_dims, heads, out_dims=out_dims, window_size=ws).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for seq in (attn.sampling_offsets, attn.sampling_scales):
            seq[2].weight.mul_(predictors)
            seq[2].bias.mul_(predictors)
    return attn.eval()


def bilinear_zero_padded(img, ys, xs):
    """Sample ``img (C, H, W)`` at float pixel positions; outside pixels count as 0."""
    _, h, w = img.shape
    out = torch.zeros(img.shape[0], len(ys), dtype=img.dtype)
    for n, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
        y0, x0 = math.floor(y), math.floor(x)
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, n] += wy * wx * img[:, yy, xx]
    return out


def explicit_vsa(attn, x, sample=True):
    """VSA from the paper's definition; ``sample=False``: plain window attention."""
    b, c, h, w = x.shape
    ws, heads, out_dims = attn.window_size, attn.num_heads, attn.out_dims
    d = out_dims // heads
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    nh, nw = hp // ws, wp // ws
    top, left = (hp - h) // 2, (wp - w) // 2

    def pad(t):
        full = torch.zeros(t.shape[0], t.shape[1], hp, wp, dtype=t.dtype)
        full[:, :, top:top + h, left:left + w] = t
        return full

    def conv1x1(conv, t):
        return torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], t) + \
            conv.bias[None, :, None, None]

    pooled = F.leaky_relu(pad(x).reshape(b, c, nh, ws, nw, ws).mean((3, 5)), 0.01)
    offsets = conv1x1(attn.sampling_offsets[2], pooled)  # (b, 2*heads, nh, nw)
    scales = conv1x1(attn.sampling_scales[2], pooled)
    qkv = pad(conv1x1(attn.qkv, x))
    q, k, v = qkv[:, :out_dims], qkv[:, out_dims:2 * out_dims], qkv[:, 2 * out_dims:]
    table = attn.relative_position_bias_table
    scale = (attn.in_dims // heads) ** -0.5

    slots = [(i // ws, i % ws) for i in range(ws * ws)]
    out = torch.zeros(b, out_dims, hp, wp, dtype=x.dtype)
    for bi in range(b):
        for hd in range(heads):
            ch = slice(hd * d, (hd + 1) * d)
            for wy in range(nh):
                for wx in range(nw):
                    ys = torch.tensor([wy * ws + r for r, _ in slots], dtype=x.dtype)
                    xs = torch.tensor([wx * ws + s for _, s in slots], dtype=x.dtype)
                    qs = q[bi, ch, ys.long(), xs.long()]  # (d, ws*ws)
                    if sample:
                        # Window centre + (1 + scale) * relative position + offset, where
                        # an offset of 1 is half the padded map divided by the window count.
                        cy, cx = (ws - 1) / 2, (ws - 1) / 2
                        s_x, s_y = scales[bi, 2 * hd:2 * hd + 2, wy, wx]
                        o_x, o_y = offsets[bi, 2 * hd:2 * hd + 2, wy, wx]
                        rel_y = torch.tensor([r - cy for r, _ in slots], dtype=x.dtype)
                        rel_x = torch.tensor([s - cx for _, s in slots], dtype=x.dtype)
                        sy = wy * ws + cy + rel_y * (1 + s_y) + o_y / nh * (hp - 1) / 2
                        sx = wx * ws + cx + rel_x * (1 + s_x) + o_x / nw * (wp - 1) / 2
                        ks = bilinear_zero_padded(k[bi, ch], sy, sx)
                        vs = bilinear_zero_padded(v[bi, ch], sy, sx)
                    else:
                        ks = k[bi, ch, ys.long(), xs.long()]
                        vs = v[bi, ch, ys.long(), xs.long()]
                    logits = torch.empty(ws * ws, ws * ws, dtype=x.dtype)
                    for i, (ri, si) in enumerate(slots):
                        for j, (rj, sj) in enumerate(slots):
                            index = (ri - rj + ws - 1) * (2 * ws - 1) + (si - sj + ws - 1)
                            logits[i, j] = (qs[:, i] @ ks[:, j]) * scale + table[index, hd]
                    res = vs @ logits.softmax(-1).T  # (d, ws*ws)
                    out[bi, ch, ys.long(), xs.long()] = res
    out = out[:, :, top:top + h, left:left + w]
    return conv1x1(attn.proj, out)


@pytest.mark.parametrize('ws,hw', [(3, (6, 9)), (3, (7, 5)), (4, (5, 10))])
def test_zero_predicted_scale_and_offset_is_window_attention_with_relative_bias(ws, hw):
    attn = make_vsa(ws=ws, predictors=0.)
    x = torch.randn(2, 6, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), explicit_vsa(attn, x, sample=False))


@pytest.mark.parametrize('ws,hw', [(3, (6, 9)), (3, (8, 4)), (7, (3, 5))])
def test_learned_scales_and_offsets_match_explicit_bilinear_sampling(ws, hw):
    """(7, (3, 5)): a map smaller than one window, padded to 7x7 and cropped back."""
    attn = make_vsa(ws=ws, predictors=1.)
    x = torch.randn(1, 6, *hw, dtype=torch.float64)
    with torch.no_grad():
        expected = explicit_vsa(attn, x, sample=True)
        # The windows really moved: plain window attention gives another result.
        assert (expected - explicit_vsa(attn, x, sample=False)).abs().max() > 1e-2
        torch.testing.assert_close(attn(x), expected)


def test_grid_sample_at_integer_positions_equals_gathering():
    torch.manual_seed(0)
    ws, hp, wp, n = 3, 6, 9, 4
    nh, nw = hp // ws, wp // ws
    shift = torch.randint(-4, 5, (n, 2, nh, nw)).double()  # whole pixels (x, y)
    scales = torch.randint(0, 2, (n, 2, nh, nw)).double()  # 0: same window, 1: doubled
    offsets = torch.stack([shift[:, 0] * 2 * nw / (wp - 1), shift[:, 1] * 2 * nh / (hp - 1)], 1)
    grid = vsa_sampling_grid(offsets, scales, ws, (hp, wp))
    img = torch.randn(n, 5, hp, wp, dtype=torch.float64)
    sampled = F.grid_sample(img, grid, mode='bilinear', padding_mode='zeros',
                            align_corners=True)
    expected = torch.zeros_like(img)
    for i in range(n):
        for y in range(hp):
            for x in range(wp):
                wy, wx = y // ws, x // ws
                sy = y + (y % ws - 1) * scales[i, 1, wy, wx] + shift[i, 1, wy, wx]
                sx = x + (x % ws - 1) * scales[i, 0, wy, wx] + shift[i, 0, wy, wx]
                if 0 <= sy < hp and 0 <= sx < wp:
                    expected[i, :, y, x] = img[i, :, int(sy), int(sx)]
    torch.testing.assert_close(sampled, expected, rtol=0, atol=1e-12)


def test_zero_init_predictors_still_receive_gradients():
    attn = VariedSizeWindowAttention(8, 2, window_size=3)
    assert attn.sampling_offsets[2].weight.abs().sum() == 0
    assert attn.sampling_scales[2].bias.abs().sum() == 0
    attn(torch.randn(2, 8, 7, 8)).square().sum().backward()
    assert attn.sampling_offsets[2].weight.grad.abs().sum() > 0
    assert attn.sampling_scales[2].weight.grad.abs().sum() > 0


def test_gradcheck_through_sampling_and_attention():
    attn = make_vsa(in_dims=4, out_dims=4, heads=2, ws=3, predictors=0.3)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(attn, (x, ), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize('hw', [(1, 1), (2, 9), (13, 6)])
def test_any_size_keeps_its_shape_and_float32_works(hw):
    attn = VariedSizeWindowAttention(8, 2, out_dims=12, window_size=7)
    out = attn(torch.randn(2, 8, *hw))
    assert out.shape == (2, 12, *hw) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_relative_position_index_is_rebuilt_not_saved():
    attn = VariedSizeWindowAttention(8, 2, window_size=3)
    assert 'relative_position_index' not in attn.state_dict()
    assert attn.relative_position_bias_table.shape == (25, 2)


def test_half_precision_input_samples_on_a_float32_grid():
    offsets = torch.zeros(2, 2, 1, 48, dtype=torch.bfloat16)
    grid = vsa_sampling_grid(offsets, offsets, 7, (7, 336))
    assert grid.dtype == torch.float32
    # Pixel 300 of 336: a bfloat16 grid would put it about 0.3 px off.
    torch.testing.assert_close(grid[0, 0, 300, 0], torch.tensor(2 * 300 / 335 - 1))
    attn = VariedSizeWindowAttention(8, 2, window_size=7).to(torch.bfloat16)
    out = attn(torch.randn(1, 8, 9, 11, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
