"""VVT w/o locality: the VVT block with S(i, j) = relu(q_i) . relu(k_j)."""
from __future__ import annotations

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import VicinityAttention, VicinityNoLocalityAttention
from vvt_mm.models.attention.vicinity_no_locality import relu_linear_attention


def explicit_block(mixer: VicinityNoLocalityAttention, x, eps=1e-4):
    """Whole block, unclamped: FRA projections, normalised relu similarity, FPC gate."""
    def lin(t, layer):
        return t @ layer.weight.T + layer.bias

    h, d = mixer.num_heads, mixer.inner_dims // mixer.num_heads
    q, k, v = lin(x, mixer.q_proj), lin(x, mixer.k_proj), lin(x, mixer.v_proj)
    out = torch.empty_like(q)
    for head in range(h):
        s = slice(head * d, (head + 1) * d)
        sim = q[..., s].relu() @ k[..., s].relu().transpose(1, 2)  # (B, N, N)
        out[..., s] = sim @ v[..., s] / (sim.sum(-1, keepdim=True) + eps)
    out = lin(out, mixer.out_proj)
    fc1, _, fc2, _ = mixer.fpc_gate
    gate = torch.sigmoid(fc2.weight @ (fc1.weight @ x.mean(1).T).relu()).T  # (B, C)
    return out + out * gate[:, None]


@pytest.mark.parametrize('hw', [(5, 7), (3, 11)])
def test_block_equals_explicit_normalised_relu_similarity_in_float64(hw):
    torch.manual_seed(0)
    mixer = VicinityNoLocalityAttention(16, 2, clamp=False).double()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    torch.testing.assert_close(mixer(x, hw), explicit_block(mixer, x))


def test_core_equals_explicit_formula_in_float64():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 10, 4, dtype=torch.float64)
    sim = q.relu() @ k.relu().transpose(-2, -1)
    expected = sim @ v / (sim.sum(-1, keepdim=True) + 1e-4)
    torch.testing.assert_close(relu_linear_attention(q, k, v, clamp=False), expected)


def test_official_clamps_change_nothing_on_ordinary_activations():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 20, 8, dtype=torch.float64)
    clamped = relu_linear_attention(q, k, v, clamp=True)
    # abs_clamp only moves magnitudes below 1e-4 (up to 1e-4) or above 1e4.
    torch.testing.assert_close(clamped, relu_linear_attention(q, k, v, clamp=False),
                               atol=2e-4, rtol=0)


def test_has_the_vicinity_block_parameters_and_loads_its_weights():
    torch.manual_seed(0)
    vicinity = VicinityAttention(32, 2, sr_ratio=2)
    plain = VicinityNoLocalityAttention(32, 2, sr_ratio=2)
    assert plain.state_dict().keys() == vicinity.state_dict().keys()
    plain.load_state_dict(vicinity.state_dict(), strict=True)
    x = torch.randn(1, 6 * 5, 32)
    with torch.no_grad():
        # Same weights, different similarity: the locality term is what differs.
        assert not torch.allclose(plain(x, (6, 5)), vicinity(x, (6, 5)), atol=1e-4)


def test_spatially_reduced_keys_use_the_reduced_tokens():
    torch.manual_seed(0)
    mixer = VicinityNoLocalityAttention(16, 2, sr_ratio=2, clamp=False).double()
    x = torch.randn(1, 5 * 7, 16, dtype=torch.float64)
    kv_tokens, kv_hw = mixer._reduced_tokens(x, (5, 7))
    assert kv_hw == (3, 4)
    h, d = 2, 4
    q = (x @ mixer.q_proj.weight.T + mixer.q_proj.bias).view(1, -1, h, d).transpose(1, 2)
    k = (kv_tokens @ mixer.k_proj.weight.T + mixer.k_proj.bias).view(1, -1, h, d)
    v = (kv_tokens @ mixer.v_proj.weight.T + mixer.v_proj.bias).view(1, -1, h, d)
    sim = q.relu() @ k.transpose(1, 2).relu().transpose(-2, -1)
    core = sim @ v.transpose(1, 2) / (sim.sum(-1, keepdim=True) + 1e-4)
    out = mixer.out_proj(core.transpose(1, 2).reshape(1, 35, 8))
    gate = mixer.fpc_gate(x.mean(1)).unsqueeze(1)
    torch.testing.assert_close(mixer(x, (5, 7)), out + out * gate)
