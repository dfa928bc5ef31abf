"""PVTv2 spatial-reduction attention against an explicit softmax over reduced keys."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import SpatialReductionAttention


def explicit_sra(mixer: SpatialReductionAttention, x, hw):
    bsz, n, c = x.shape
    r = mixer.sr_ratio
    if r > 1:
        h, w = hw
        grid = x.transpose(1, 2).reshape(bsz, c, h, w)
        hp, wp = math.ceil(h / r) * r, math.ceil(w / r) * r
        padded = grid.new_zeros(bsz, c, hp, wp)
        padded[:, :, :h, :w] = grid
        # sr x sr stride-sr conv as a sum over patches.
        patches = padded.reshape(bsz, c, hp // r, r, wp // r, r)
        reduced = torch.einsum('bcxiyj,ocij->boxy', patches, mixer.sr.weight)
        reduced = reduced + mixer.sr.bias[:, None, None]
        tokens = reduced.flatten(2).transpose(1, 2)
        mean = tokens.mean(-1, keepdim=True)
        var = tokens.var(-1, unbiased=False, keepdim=True)
        tokens = (tokens - mean) / torch.sqrt(var + mixer.norm.eps)
        tokens = tokens * mixer.norm.weight + mixer.norm.bias
    else:
        tokens = x
    q = x @ mixer.q.weight.T + mixer.q.bias
    k, v = (tokens @ mixer.kv.weight.T + mixer.kv.bias).split(c, dim=-1)
    d = c // mixer.num_heads
    out = torch.empty_like(x)
    for head in range(mixer.num_heads):
        s = slice(head * d, (head + 1) * d)
        attn = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)
        out[..., s] = attn @ v[..., s]
    return out @ mixer.proj.weight.T + mixer.proj.bias


@pytest.mark.parametrize('sr_ratio,hw', [(1, (5, 7)), (2, (5, 7)), (2, (6, 8)), (4, (3, 3)),
                                         (8, (9, 13))])
def test_output_equals_explicit_softmax_over_reduced_keys_in_float64(sr_ratio, hw):
    torch.manual_seed(0)
    mixer = SpatialReductionAttention(8, 2, sr_ratio=sr_ratio).double()
    # Non-trivial LayerNorm affine so the test sees it.
    if sr_ratio > 1:
        torch.nn.init.normal_(mixer.norm.weight)
        torch.nn.init.normal_(mixer.norm.bias)
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(x, hw), explicit_sra(mixer, x, hw))


def test_padding_keeps_the_last_row_and_column_visible_to_keys():
    """PVTv2's unpadded conv drops them on sides that are not multiples of sr."""
    torch.manual_seed(0)
    mixer = SpatialReductionAttention(8, 1, sr_ratio=4).double()
    x = torch.randn(1, 5 * 6, 8, dtype=torch.float64)
    assert mixer.reduce_tokens(x, (5, 6)).shape[1] == 2 * 2  # ceil(5/4) * ceil(6/4)
    bumped = x.clone()
    bumped[:, -1] += 1.0  # the bottom-right token, beyond floor(5/4) x floor(6/4)
    # Token 0 is a query in both; only the keys/values can carry the change.
    assert not torch.allclose(mixer(x, (5, 6))[:, 0], mixer(bumped, (5, 6))[:, 0])


def test_layout_is_pvtv2_sra():
    mixer = SpatialReductionAttention(64, 1, sr_ratio=8)
    assert set(dict(mixer.named_parameters())) == {
        'q.weight', 'q.bias', 'kv.weight', 'kv.bias', 'proj.weight', 'proj.bias',
        'sr.weight', 'sr.bias', 'norm.weight', 'norm.bias'}
    assert mixer.sr.kernel_size == (8, 8) and mixer.sr.stride == (8, 8)
    assert mixer.norm.eps == 1e-5
    assert not hasattr(SpatialReductionAttention(64, 1), 'sr')


def test_bad_sr_ratio_is_rejected():
    with pytest.raises(ValueError, match='sr_ratio'):
        SpatialReductionAttention(8, 1, sr_ratio=0)
