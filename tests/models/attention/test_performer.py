"""Performer FAVOR+: exact random-feature formula, softmax approximation, fixed features."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import PerformerAttention, performer_attention
from vvt_mm.models.attention.performer import orthogonal_gaussian_features


def explicit_features(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """phi(x) = exp(w . x' - |x'|^2 / 2) / sqrt(m) with x' = x / d^(1/4), unstabilised."""
    x = x / x.shape[-1] ** 0.25
    return torch.exp(x @ projection.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(
        projection.shape[0])


def test_module_equals_explicit_random_feature_attention_in_float64():
    torch.manual_seed(0)
    mixer = PerformerAttention(12, 2, num_features=20).double()
    x = torch.randn(2, 5 * 7, 12, dtype=torch.float64)
    q, k, v = (x @ mixer.qkv.weight.T + mixer.qkv.bias).split(12, dim=-1)
    out = []
    for s in (slice(0, 6), slice(6, 12)):
        sim = explicit_features(q[..., s], mixer.projection) @ explicit_features(
            k[..., s], mixer.projection).transpose(1, 2)  # (B, N, N), positive
        out.append(sim @ v[..., s] / sim.sum(-1, keepdim=True))
    expected = torch.cat(out, -1) @ mixer.proj.weight.T + mixer.proj.bias
    torch.testing.assert_close(mixer(x, (5, 7)), expected)


def test_estimates_softmax_attention_within_the_favor_error_bound():
    """Performer Lemma 2: positive features estimate exp(x . y) with relative
    standard deviation sqrt((exp(|x + y|^2) - 1) / m) (iid features; orthogonal
    ones do no worse). With |x'| = |y'| = 0.5 that is <= sqrt((e - 1) / m),
    0.010 at m = 16384; the mean relative error of the attention weights must
    stay below it (a biased estimator plateaus above it as m grows)."""
    d, n, m = 16, 12, 16384
    gen = torch.Generator().manual_seed(0)
    projection = orthogonal_gaussian_features(m, d, gen).double()
    x = torch.randn(2, 1, 2, n, d, dtype=torch.float64, generator=gen)
    x = x / x.norm(dim=-1, keepdim=True) * 0.5 * d ** 0.25  # |x / d^(1/4)| = 0.5
    q, k = x
    weights = performer_attention(q, k, torch.eye(n, dtype=torch.float64).expand(1, 2, n, n),
                                  projection)
    exact = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    rel_err = ((weights - exact).abs() / exact).mean()
    assert rel_err < math.sqrt((math.e - 1) / m), rel_err


def test_random_directions_are_orthogonal_in_blocks_and_unbiased():
    d = 8
    proj = orthogonal_gaussian_features(2000 * d, d, torch.Generator().manual_seed(0))
    blocks = proj.double().view(2000, d, d)
    units = blocks / blocks.norm(dim=-1, keepdim=True)
    gram = units @ units.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(d, dtype=torch.float64).expand_as(gram),
                               atol=1e-5, rtol=0)
    # Haar rows: every position in a block has mean direction 0 (std 1/sqrt(8 * 2000)).
    assert units.mean(0).abs().max() < 0.05
    # Row norms follow the chi distribution of a Gaussian vector: E|w|^2 = d.
    assert abs(blocks.pow(2).sum(-1).mean() - d) < 0.3


def test_projection_is_a_saved_buffer_fixed_in_eval_and_redrawn_only_in_training():
    torch.manual_seed(0)
    mixer = PerformerAttention(8, 1, num_features=16, redraw_interval=2)
    assert 'projection' in mixer.state_dict()
    assert all(p is not mixer.projection for p in mixer.parameters())
    x = torch.randn(1, 12, 8)
    fixed = mixer.projection.clone()
    mixer.eval()
    for _ in range(4):
        mixer(x, (3, 4))
    assert torch.equal(mixer.projection, fixed)
    mixer.train()
    mixer(x, (3, 4))
    assert torch.equal(mixer.projection, fixed)  # 1 of 2 training calls
    mixer(x, (3, 4))
    assert not torch.equal(mixer.projection, fixed)


def test_default_never_redraws_and_a_loaded_model_evaluates_identically():
    torch.manual_seed(0)
    trained = PerformerAttention(8, 1).train()
    x = torch.randn(1, 12, 8)
    before = trained.projection.clone()
    trained(x, (3, 4))
    assert torch.equal(trained.projection, before)
    fresh = PerformerAttention(8, 1)
    fresh.load_state_dict(trained.state_dict())
    trained.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x, (3, 4)), trained(x, (3, 4)))


def test_default_uses_256_features():
    assert PerformerAttention(64, 1).projection.shape == (256, 64)


def test_large_logits_stay_finite():
    torch.manual_seed(0)
    mixer = PerformerAttention(8, 1, num_features=16)
    out = mixer(torch.randn(1, 12, 8) * 100, (3, 4))
    assert torch.isfinite(out).all()
    assert pytest.approx(0) != out.abs().sum().item()
