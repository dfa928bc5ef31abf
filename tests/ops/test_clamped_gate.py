"""The fused FPC with its clamps against the official expression, bit for bit."""
from __future__ import annotations

import pytest
import torch

from vvt_mm.models.attention import vicinity as vicinity_module
from vvt_mm.models.attention.vicinity import VicinityAttention
from vvt_mm.ops.clamped_gate import clamped_feature_preserving
from vvt_mm.ops.vicinity_reference import ABS_CLAMP_MAX, ABS_CLAMP_MIN


def official_abs_clamp(t: torch.Tensor) -> torch.Tensor:
    """The official ``sign(t) * clamp(|t|)``, differentiated by autograd, with the
    subgradient 1 at the clamp bounds that :func:`~vvt_mm.ops.abs_clamp` uses
    everywhere (torch's own ``clamp`` backward gives 0 exactly there)."""
    mag = t.abs()
    inside = (mag >= ABS_CLAMP_MIN) & (mag <= ABS_CLAMP_MAX)
    return torch.where(inside, t, (mag.clamp(ABS_CLAMP_MIN, ABS_CLAMP_MAX) * t.sign()).detach())


def official_fpc(out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    y = official_abs_clamp(out)
    return official_abs_clamp(y + y * gate)


def _inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Values on both sides of both clamp bounds, exact zeros, and gates in (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 300, 24)
    scale = 10 ** (torch.rand(shape, generator=gen) * 12 - 7)  # 1e-7 .. 1e5
    out = torch.randn(shape, generator=gen) * scale
    out.view(-1)[::37] = 0
    # Magnitudes whose gated sum lands right at and next to the upper bound.
    out[0, :8] = ABS_CLAMP_MAX / 1.5
    out[1, :8] = -ABS_CLAMP_MIN
    gate = torch.sigmoid(torch.randn(2, 1, 24, generator=gen) * 3)
    gate[0, 0, :4] = 0.5
    return out.to(dtype), gate.to(dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_value_and_gradients_equal_the_official_expressions_bit_for_bit(dtype):
    out, gate = _inputs(dtype)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    results = []
    for fn in (clamped_feature_preserving, official_fpc):
        o, g = out.clone().requires_grad_(), gate.clone().requires_grad_()
        value = fn(o, g)
        value.backward(grad)
        results.append((value.detach(), o.grad, g.grad))
    (value, grad_out, grad_gate), (want, want_out, want_gate) = results
    assert value.dtype == want.dtype
    assert torch.equal(value, want)
    assert torch.equal(grad_out, want_out)
    assert torch.equal(grad_gate, want_gate)
    # Non-vacuous: both clamps are active somewhere and gradients flow elsewhere.
    mag = want.abs()
    assert (mag == ABS_CLAMP_MAX).any() and (want == 0).any()
    assert (want_out == 0).any() and (want_out != 0).any()


def test_without_grad_gives_the_same_value():
    out, gate = _inputs(torch.float32, seed=3)
    with torch.no_grad():
        assert torch.equal(clamped_feature_preserving(out, gate), official_fpc(out, gate))


def test_mixed_dtypes_are_refused_with_the_reason():
    out, gate = _inputs(torch.float32)
    with pytest.raises(TypeError, match='share a dtype'):
        clamped_feature_preserving(out.half(), gate)


def test_attention_module_output_and_gradients_match_its_plain_expression(monkeypatch):
    torch.manual_seed(0)
    attn = VicinityAttention(embed_dims=32, num_heads=2)
    x = torch.randn(2, 64, 32)
    results = []
    for eager in (True, False):
        monkeypatch.setattr(vicinity_module, '_eager', lambda eager=eager: eager)
        attn.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        value = attn(xi, (8, 8))
        value.square().sum().backward()
        results.append((value.detach(), xi.grad,
                        [p.grad.clone() for p in attn.parameters()]))
    (value, grad_x, grads), (want, want_x, want_grads) = results
    assert torch.equal(value, want) and torch.equal(grad_x, want_x)
    assert all(torch.equal(a, b) for a, b in zip(grads, want_grads))


def test_attention_module_takes_the_plain_ops_under_compile_and_export(monkeypatch):
    calls = []
    monkeypatch.setattr(vicinity_module, 'clamped_feature_preserving',
                        lambda *a: calls.append(a) or clamped_feature_preserving(*a))
    attn = VicinityAttention(embed_dims=16, num_heads=1)
    x = torch.randn(1, 16, 16)
    attn(x, (4, 4))
    assert len(calls) == 1
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    attn(x, (4, 4))
    assert len(calls) == 1
