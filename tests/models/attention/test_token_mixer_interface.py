"""Every registered token mixer: the block interface, any grid size, gradients, params."""
from __future__ import annotations

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import build_attention

C, HEADS = 16, 2


def vicinity_params(c: int) -> int:
    # Feature reduction 2: q/k/v C -> C/2 with bias, out C/2 -> C with bias, FPC 2 C^2.
    return 3 * (c * c // 2 + c // 2) + (c // 2 * c + c) + 2 * c * c


# name: (extra config, parameter count from the method's layout, for C channels)
MIXERS = {
    'softmax': (dict(), lambda c: 4 * c * c + 4 * c),
    'spatial_reduction': (dict(sr_ratio=2),
                          lambda c: 4 * c * c + 4 * c + c * c * 2 * 2 + c + 2 * c),
    'performer': (dict(num_features=32), lambda c: 4 * c * c + 4 * c),
    'linformer': (dict(proj_len=6, pool_size=3), lambda c: 4 * c * c + 4 * c + 2 * 6 * 9),
    'cosformer': (dict(), lambda c: 4 * c * c + 4 * c),
    # hidden P = C/4: mask C+1, C->P with bias, LN 2P, P->C with bias
    'gc': (dict(ratio=0.25), lambda c: (c + 1) + (c * c // 4 + c // 4) + 2 * (c // 4) +
           (c // 4 * c + c)),
    'vicinity_no_locality': (dict(), vicinity_params),
    'vicinity': (dict(), vicinity_params),
    # LVT: per head a 9x9 attention from C channels, 9 position value maps, proj.
    'csa': (dict(), lambda c: (c * 81 * HEADS + 81 * HEADS) + 9 * c * c + (c * c + c)),
    # q and kv without bias, proj, a 2x2 reduction conv + LN, one shared 3x3 dw kernel.
    'rasa': (dict(sr_ratio=2), lambda c: 3 * c * c + (c * c + c) + (4 * c * c + c) + 2 * c +
             9 * c),
    # ViTAEv2: offset and scale predictors (2 per head), qkv and proj 1x1 convs, a
    # (2 * 3 - 1)^2 relative position bias table per head.
    'vsa': (dict(window_size=3), lambda c: 2 * (c * 2 * HEADS + 2 * HEADS) + (3 * c * c + 3 * c) +
            (c * c + c) + 25 * HEADS),
}


def build(name: str, dtype=torch.float32, embed_dims: int = C, **overrides):
    cfg = dict(type=name, **MIXERS[name][0], **overrides)
    return build_attention(cfg, embed_dims=embed_dims, num_heads=HEADS).to(dtype)


@pytest.mark.parametrize('name', list(MIXERS))
def test_one_module_mixes_grids_of_any_size_and_keeps_token_shape(name):
    torch.manual_seed(0)
    mixer = build(name).eval()
    # Non-square, odd, smaller than the pooling grid and than sr, larger, 1 x n.
    for hw in [(5, 7), (3, 11), (13, 9), (1, 6), (1, 1)]:
        x = torch.randn(2, hw[0] * hw[1], C)
        with torch.no_grad():
            out = mixer(x, hw)
        assert out.shape == x.shape, (name, hw)
        assert torch.isfinite(out).all(), (name, hw)


@pytest.mark.parametrize('name', list(MIXERS))
def test_batch_items_are_mixed_independently(name):
    torch.manual_seed(0)
    mixer = build(name).eval()
    x = torch.randn(3, 35, C)
    with torch.no_grad():
        together = mixer(x, (5, 7))
        alone = mixer(x[1:2], (5, 7))
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', list(MIXERS))
def test_gradients_match_finite_differences_in_float64(name):
    torch.manual_seed(0)
    overrides = dict(clamp=False) if name.startswith('vicinity') else {}
    mixer = build(name, dtype=torch.float64, embed_dims=8, **overrides).eval()
    x = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    # fast_mode checks random projections of the Jacobian (a 48 x 48 matrix here).
    assert torch.autograd.gradcheck(lambda t: mixer(t, (2, 3)), (x, ), eps=1e-6, atol=1e-5,
                                    fast_mode=True)


@pytest.mark.parametrize('name', list(MIXERS))
def test_parameter_count_follows_the_method_layout(name):
    mixer = build(name)
    assert sum(p.numel() for p in mixer.parameters()) == MIXERS[name][1](C)


@pytest.mark.parametrize('name', list(MIXERS))
def test_bfloat16_autocast_gives_finite_output_in_input_dtype(name):
    torch.manual_seed(0)
    mixer = build(name).eval()
    x = torch.randn(1, 35, C)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = mixer(x, (5, 7))
    assert torch.isfinite(out.float()).all()
    reference = mixer(x, (5, 7))
    # bf16 keeps ~3 significant digits; a loose bound still catches a broken path.
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05
