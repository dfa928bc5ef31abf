"""Key/value spatial reduction: one module for SRA, VVT and RASA, checked by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import SpatialReductionAttention, VicinityAttention
from vvt_mm.models.layers import RecursiveAtrousSelfAttention
from vvt_mm.models.layers.kv_reduction import KVReductionMixin


class Reducer(KVReductionMixin, nn.Module):

    def __init__(self, channels: int, sr_ratio: int) -> None:
        super().__init__()
        self.init_kv_reduction(channels, sr_ratio)


def patchwise_reduction(x: torch.Tensor, hw: tuple[int, int], weight, bias, ln_weight,
                        ln_bias, r: int, eps: float = 1e-5) -> torch.Tensor:
    """Each output token: the weighted sum over its r x r patch of the zero-padded
    grid, then a LayerNorm written out (mean / biased variance)."""
    b, _, c = x.shape
    h, w = hw
    hp, wp = -(-h // r) * r, -(-w // r) * r
    grid = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    grid[:, :h, :w] = x.reshape(b, h, w, c)
    out = []
    for i in range(hp // r):
        for j in range(wp // r):
            patch = grid[:, i * r:(i + 1) * r, j * r:(j + 1) * r]  # (B, r, r, C_in)
            out.append(torch.einsum('bpqi,oipq->bo', patch, weight) + bias)
    out = torch.stack(out, dim=1)
    mean = out.mean(-1, keepdim=True)
    var = ((out - mean)**2).mean(-1, keepdim=True)
    return (out - mean) / torch.sqrt(var + eps) * ln_weight + ln_bias


@pytest.mark.parametrize('hw, r', [((4, 6), 2), ((5, 7), 2), ((3, 2), 4), ((9, 4), 3)])
def test_reduction_is_a_patchwise_linear_map_then_layernorm(hw, r):
    torch.manual_seed(0)
    mod = Reducer(6, r).double()
    with torch.no_grad():
        mod.norm.weight.uniform_(0.5, 1.5)
        mod.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, hw[0] * hw[1], 6, dtype=torch.float64)
    tokens, grid = mod.reduce_kv(x, hw)
    assert grid == (-(-hw[0] // r), -(-hw[1] // r))
    expected = patchwise_reduction(x, hw, mod.sr.weight, mod.sr.bias, mod.norm.weight,
                                   mod.norm.bias, r)
    torch.testing.assert_close(tokens, expected)


def test_ratio_one_is_the_identity_without_layers():
    mod = Reducer(4, 1)
    x = torch.randn(1, 6, 4)
    tokens, grid = mod.reduce_kv(x, (2, 3))
    assert tokens is x and grid == (2, 3)
    assert not list(mod.parameters())


@pytest.mark.parametrize('bad', [0, 1.5, -2])
def test_bad_ratio_is_refused(bad):
    with pytest.raises(ValueError, match='sr_ratio must be an integer >= 1'):
        Reducer(4, bad)


@pytest.mark.parametrize('build', [
    lambda: SpatialReductionAttention(8, 2, sr_ratio=2),
    lambda: VicinityAttention(8, 2, sr_ratio=2),
    lambda: RecursiveAtrousSelfAttention(8, 2, sr_ratio=2),
])
def test_every_mixer_with_reduction_uses_it_under_the_official_key_names(build):
    mixer = build()
    assert isinstance(mixer, KVReductionMixin)
    keys = set(mixer.state_dict())
    assert {'sr.weight', 'sr.bias', 'norm.weight', 'norm.bias'} <= keys
    assert mixer.norm.eps == 1e-5
