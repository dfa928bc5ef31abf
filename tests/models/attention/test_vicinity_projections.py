"""VicinityAttention's stacked q/k/v projection equals the three layers it stands for."""
import pytest
import torch
import torch.nn as nn

from vvt_mm.models.attention.vicinity import VicinityAttention


def _separately(attn: VicinityAttention, x: torch.Tensor, hw: tuple[int, int]):
    kv_tokens, _ = attn.reduce_kv(x, hw)
    return attn.q_proj(x), attn.k_proj(kv_tokens), attn.v_proj(kv_tokens)


@pytest.mark.parametrize('sr_ratio', [1, 2])
def test_stacked_projection_matches_the_three_layers_with_gradients(sr_ratio):
    torch.manual_seed(0)
    attn = VicinityAttention(32, num_heads=2, sr_ratio=sr_ratio).double()
    x = torch.randn(2, 6 * 4, 32, dtype=torch.float64, requires_grad=True)
    kv_tokens, _ = attn.reduce_kv(x, (6, 4))
    stacked = attn.project_qkv(x, kv_tokens)
    reference = _separately(attn, x, (6, 4))
    for got, want in zip(stacked, reference):
        torch.testing.assert_close(got, want)
    # Gradients of the projections' own parameters and of the input, per output.
    weights = [torch.randn_like(t) for t in reference]
    params = [x, *(p for m in (attn.q_proj, attn.k_proj, attn.v_proj)
                   for p in m.parameters())]
    got = torch.autograd.grad(sum((t * w).sum() for t, w in zip(stacked, weights)), params)
    want = torch.autograd.grad(sum((t * w).sum() for t, w in zip(reference, weights)),
                               params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_a_layer_without_bias_stacks_zeros():
    torch.manual_seed(0)
    attn = VicinityAttention(16, num_heads=1)
    attn.k_proj = nn.Linear(16, 8, bias=False)
    x = torch.randn(1, 9, 16)
    for got, want in zip(attn.project_qkv(x, x), _separately(attn, x, (3, 3))):
        torch.testing.assert_close(got, want)


def test_replaced_or_hooked_projections_run_as_they_are():
    """An adapter in place of a projection, or a hook on one, is not bypassed."""
    torch.manual_seed(0)
    attn = VicinityAttention(16, num_heads=1)
    x = torch.randn(1, 9, 16)
    adapter = nn.Sequential(nn.Linear(16, 8), nn.Tanh())
    attn.v_proj = adapter
    v = attn.project_qkv(x, x)[2]
    torch.testing.assert_close(v, adapter(x))

    attn = VicinityAttention(16, num_heads=1)
    seen = []
    attn.q_proj.register_forward_hook(lambda m, args, out: seen.append(out.shape) or out * 2)
    q = attn.project_qkv(x, x)[0]
    assert seen == [torch.Size([1, 9, 8])]
    torch.testing.assert_close(q, 2 * nn.functional.linear(x, attn.q_proj.weight,
                                                           attn.q_proj.bias))
