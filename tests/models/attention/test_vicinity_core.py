"""The vicinity attention core against the explicit O(N^2) definition."""
import math

import pytest
import torch

from vvt_mm.models.attention import vicinity as vicinity_module
from vvt_mm.models.attention import vicinity_dispatch
from vvt_mm.models.attention.vicinity import VicinityAttention
from vvt_mm.models.attention.vicinity_dispatch import triton_available, vicinity_attention
from vvt_mm.ops import vicinity_separable
from vvt_mm.ops.vicinity_reference import NORMALISER_EPS, vicinity_attention_reference
from vvt_mm.ops.vicinity_separable import vicinity_attention_separable

IMPLS = {'torch': vicinity_attention_separable, 'reference': vicinity_attention_reference}


def quadratic_vicinity(q, k, v, q_hw, kv_hw, eps=NORMALISER_EPS):
    """The paper's definition, one similarity per (query, key) pair.

    S(i, j) = relu(q_i) . relu(k_j) * (cos(a_i - a_j) + cos(b_i - b_j)) with
    a = (pi/2) row / H and b = (pi/2) col / W on each token's own grid.
    """

    def angles(hw):
        h, w = hw
        idx = torch.arange(h * w, dtype=torch.float64)
        return (math.pi / 2) * (idx // w) / h, (math.pi / 2) * (idx % w) / w

    a_q, b_q = angles(q_hw)
    a_k, b_k = angles(kv_hw)
    locality = (torch.cos(a_q[:, None] - a_k[None]) + torch.cos(b_q[:, None] - b_k[None]))
    sim = (q.relu() @ k.relu().transpose(-2, -1)) * locality
    return (sim @ v) / (sim.sum(-1, keepdim=True) + eps)


def make_qkv(bsz, heads, q_hw, kv_hw, dim, dtype=torch.float64, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(bsz, heads, q_hw[0] * q_hw[1], dim)] + [(bsz, heads, kv_hw[0] * kv_hw[1], dim)] * 2
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(grad) for s in shapes]


GRIDS = [((5, 7), (5, 7)), ((6, 9), (2, 3)), ((9, 4), (3, 2))]


@pytest.mark.parametrize('impl', ['torch', 'reference'])
@pytest.mark.parametrize('q_hw,kv_hw', GRIDS)
def test_core_equals_quadratic_definition_in_float64(impl, q_hw, kv_hw):
    q, k, v = make_qkv(2, 3, q_hw, kv_hw, 6)
    out = IMPLS[impl](q, k, v, q_hw, kv_hw, clamp=False)
    torch.testing.assert_close(out, quadratic_vicinity(q, k, v, q_hw, kv_hw), rtol=1e-10,
                               atol=1e-12)


def clamp_stressing_inputs(q_hw, kv_hw, dtype, grad):
    """Inputs that hit every clamp: a huge kv state, tiny numerators, zero rows."""
    q, k, v = make_qkv(2, 2, q_hw, kv_hw, 5, dtype=dtype, seed=3)
    with torch.no_grad():
        k[0] *= 300.0  # K'^T V beyond 1e4 for batch 0
        v[0] *= 300.0
        v[1, 0] *= 1e-7  # numerators below 1e-4 for batch 1, head 0
        q[1, 1, :3] = -1.0  # relu(q) == 0: exact zeros must stay zero
    return [t.requires_grad_(grad) for t in (q, k, v)]


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('q_hw,kv_hw', GRIDS[:2])
def test_torch_path_matches_reference_with_official_clamps(dtype, tol, q_hw, kv_hw):
    q, k, v = clamp_stressing_inputs(q_hw, kv_hw, dtype, grad=False)
    fast = vicinity_attention_separable(q, k, v, q_hw, kv_hw, clamp=True)
    ref = vicinity_attention_reference(q, k, v, q_hw, kv_hw, clamp=True)
    torch.testing.assert_close(fast, ref, rtol=tol, atol=tol)
    assert (ref[1, 1, :3] == 0).all() and (fast[1, 1, :3] == 0).all()
    # The stress really reaches the clamps: the saturated state changes batch 0
    # and batch 1 / head 0 has outputs floored at 1e-4.
    unclamped = vicinity_attention_reference(q, k, v, q_hw, kv_hw, clamp=False)
    assert not torch.allclose(ref[0], unclamped[0], rtol=1e-3)
    assert (ref[1, 0].abs() == torch.tensor(1e-4, dtype=dtype)).any()


@pytest.mark.parametrize('clamp', [True, False])
@pytest.mark.parametrize('q_hw,kv_hw', GRIDS)
def test_torch_path_gradients_match_reference(clamp, q_hw, kv_hw):
    q, k, v = clamp_stressing_inputs(q_hw, kv_hw, torch.float64, grad=True)
    grad_out = torch.randn(q.shape, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(7))
    grads = {}
    for name, fn in IMPLS.items():
        out = fn(q, k, v, q_hw, kv_hw, clamp=clamp)
        grads[name] = torch.autograd.grad(out, (q, k, v), grad_out)
    for fast, ref in zip(grads['torch'], grads['reference']):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-11)


def test_torch_path_gradients_pass_gradcheck_without_clamps():
    q, k, v = make_qkv(1, 2, (3, 4), (2, 2), 3, grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: vicinity_attention_separable(q, k, v, (3, 4), (2, 2), clamp=False),
        (q, k, v))


def test_torch_path_blocks_give_the_same_result(monkeypatch):
    """Tiny blocks (one row at a time) and one block for everything agree."""
    q, k, v = make_qkv(2, 2, (7, 5), (3, 2), 4, grad=True)
    results = []
    for block in (1, 1 << 20):
        monkeypatch.setattr(vicinity_separable, 'BLOCK_ELEMENTS', block)
        out = vicinity_attention_separable(q, k, v, (7, 5), (3, 2))
        results.append((out, *torch.autograd.grad(out.square().sum(), (q, k, v))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_torch_path_accepts_head_strided_projections():
    """q/k/v as ``proj(x).view(B, N, h, d).transpose(1, 2)`` (non-contiguous)."""
    gen = torch.Generator().manual_seed(1)
    x = [torch.randn(2, 20, 3, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    q, k, v = (t.transpose(1, 2) for t in x)
    out = vicinity_attention_separable(q, k, v, (4, 5), clamp=False)
    torch.testing.assert_close(out, quadratic_vicinity(q, k, v, (4, 5), (4, 5)))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_finite_on_1024_image_stage1_grid(dtype):
    """256 x 256 tokens (stage 1 of a 1024^2 image): the state sums 65k tokens."""
    hw = (256, 256)
    q, k, v = make_qkv(1, 1, hw, hw, 8, dtype=torch.float32, seed=5)
    q, k, v = (t.mul(4).requires_grad_() for t in (q, k, v))
    with torch.autocast('cpu', dtype=dtype):
        out = vicinity_attention(q.to(dtype), k.to(dtype), v.to(dtype), hw, impl='torch')
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    # Same inputs (rounded to the half type), fp64 math: only output rounding differs.
    exact = vicinity_attention_separable(*(t.detach().to(dtype).double() for t in (q, k, v)), hw)
    torch.testing.assert_close(out.double(), exact, rtol=1e-2, atol=1e-2)


def test_dispatcher_picks_by_map_size_on_cpu_and_rejects_unknown_impl(monkeypatch):
    """Small maps go through the official formulation, others the separable one."""
    calls = []
    for name in ('vicinity_attention_separable', 'vicinity_attention_reference'):
        impl = getattr(vicinity_dispatch, name)
        monkeypatch.setattr(vicinity_dispatch, name,
                            lambda *a, _impl=impl, _name=name, **kw: calls.append(_name) or
                            _impl(*a, **kw))
    small = make_qkv(1, 1, (3, 3), (3, 3), 2, dtype=torch.float32, grad=True)
    big = make_qkv(1, 1, (20, 20), (20, 20), 2, dtype=torch.float32, grad=True)
    assert not triton_available(small[0])
    out = vicinity_attention(*small, (3, 3))
    torch.testing.assert_close(out, vicinity_attention_separable(*small, (3, 3)))
    vicinity_attention(*big, (20, 20))  # 400 tokens with grad: separable
    with torch.no_grad():
        vicinity_attention(*big, (20, 20))  # inference on <= 576 tokens: official
    with torch.autocast('cpu', dtype=torch.bfloat16):
        vicinity_attention(*small, (3, 3))  # autocast: always the fp32 separable path
    assert calls == ['vicinity_attention_reference', 'vicinity_attention_separable',
                     'vicinity_attention_reference', 'vicinity_attention_separable']
    with pytest.raises(ValueError, match='impl'):
        vicinity_attention(*small, (3, 3), impl='cuda')


def test_core_rejects_token_counts_that_do_not_fit_the_grid():
    q, k, v = make_qkv(1, 1, (3, 3), (3, 3), 2, dtype=torch.float32)
    with pytest.raises(ValueError, match='grid'):
        vicinity_attention_separable(q, k, v, (3, 4))
    with pytest.raises(ValueError, match='grid'):
        vicinity_attention_separable(q, k, v, (3, 3), (2, 2))


@pytest.mark.parametrize('hw', [(9, 7), (5, 10)])
def test_vicinity_attention_sr_on_sizes_not_divisible_by_ratio(hw, monkeypatch):
    torch.manual_seed(0)
    attn = VicinityAttention(embed_dims=16, num_heads=2, sr_ratio=4).double()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64, requires_grad=True)
    seen = []

    def spy(q, k, v, q_hw, kv_hw=None, **kwargs):
        seen.append((q_hw, kv_hw))
        return vicinity_attention(q, k, v, q_hw, kv_hw, **kwargs)

    monkeypatch.setattr(vicinity_module, 'vicinity_attention', spy)
    outs = {}
    for impl in ('torch', 'reference'):
        attn.impl = impl
        outs[impl] = attn(x, hw)
    # Keys/values live on the reduced ceil(H/4) x ceil(W/4) grid, angles included.
    assert seen[0] == (hw, (math.ceil(hw[0] / 4), math.ceil(hw[1] / 4)))
    assert outs['torch'].shape == x.shape
    torch.testing.assert_close(outs['torch'], outs['reference'], rtol=1e-10, atol=1e-12)
    outs['torch'].sum().backward()
    assert torch.isfinite(x.grad).all() and attn.sr.weight.grad.abs().sum() > 0
