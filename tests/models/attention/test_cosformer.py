"""cosFormer attention against the explicit O(N^2) cos-re-weighted similarity."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import CosFormerAttention, cosformer_attention


def explicit_cosformer(q, k, v, eps=1e-6):
    """S(i, j) = relu(q_i).relu(k_j) cos(pi/2 (i - j) / N), normalised over j."""
    n = q.shape[-2]
    idx = torch.arange(n, dtype=q.dtype)
    weight = torch.cos(math.pi / 2 * (idx[:, None] - idx[None, :]) / n)
    sim = (q.relu() @ k.relu().transpose(-2, -1)) * weight
    return (sim @ v) / sim.sum(-1, keepdim=True).clamp_min(eps)


@pytest.mark.parametrize('n', [1, 12, 35])
def test_core_equals_explicit_quadratic_formula_in_float64(n):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, n, 5, dtype=torch.float64)
    torch.testing.assert_close(cosformer_attention(q, k, v), explicit_cosformer(q, k, v))


def test_module_output_equals_explicit_formula_on_non_square_grid():
    torch.manual_seed(0)
    mixer = CosFormerAttention(12, 2).double()
    x = torch.randn(2, 5 * 7, 12, dtype=torch.float64)
    q, k, v = (x @ mixer.qkv.weight.T + mixer.qkv.bias).split(12, dim=-1)
    heads = [slice(0, 6), slice(6, 12)]
    out = torch.cat([explicit_cosformer(q[..., s], k[..., s], v[..., s]) for s in heads], -1)
    expected = out @ mixer.proj.weight.T + mixer.proj.bias
    torch.testing.assert_close(mixer(x, (5, 7)), expected)


def test_weighting_follows_flattened_order_not_the_2d_grid():
    """The 1D prior of Table VI: a vertical neighbour counts as W tokens away."""
    torch.manual_seed(0)
    n = 12  # a 3 x 4 grid, row-major
    q = torch.ones(1, 1, n, 1, dtype=torch.float64)
    k = torch.ones(1, 1, n, 1, dtype=torch.float64)
    v = torch.eye(n, dtype=torch.float64)[None, None]  # output row i = weights of query i
    weights = cosformer_attention(q, k, v)[0, 0]
    # Token 5 (row 1, col 1): its right neighbour (6) outweighs its lower one (9).
    assert weights[5, 6] > weights[5, 9]
    torch.testing.assert_close(weights.sum(-1), torch.ones(n, dtype=torch.float64))
