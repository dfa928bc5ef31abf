"""The official-structure VVT (benchmark stand-in) computes our VVT's function.

Same weights through the checkpoint converter; outputs and gradients agree to
fp32 rounding at a square and a non-square size (stage-1 maps small enough for
the official formulation inside ours, and large enough for the separable one).
"""
import pytest
import torch

from vvt_mm.benchmark.official_structure_vvt import OfficialStructureVVT, official_structure_pair
from vvt_mm.testing import to_official

TINY = dict(embed_dims=[16, 32, 32, 64], num_heads=[1, 1, 2, 2], depths=[1, 2, 1, 1],
            mlp_ratios=[2, 2, 2, 2])


def test_its_keys_are_the_official_layout():
    ours, official = official_structure_pair(TINY)
    # to_official is an independent reading of the official key layout.
    assert set(official.state_dict()) == set(to_official(ours.state_dict()))
    keys = set(official.state_dict())
    assert {'patch_embed1.proj.weight', 'block2.1.attn.se_fc.2.weight',
            'block1.0.mlp.dwconv.dwconv.bias', 'norm4.weight'} <= keys


@pytest.mark.parametrize('hw', [(64, 64), (96, 128)])
def test_outputs_and_gradients_match_ours(hw):
    ours, official = official_structure_pair(TINY, seed=1)
    ours.train(), official.train()
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    outs_a, outs_b = ours(x), official(x)
    assert [o.shape for o in outs_a] == [o.shape for o in outs_b]
    for a, b in zip(outs_a, outs_b):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i))
               for i, o in enumerate(outs_a)]
    sum((o * w).sum() for o, w in zip(outs_a, weights)).backward()
    sum((o * w).sum() for o, w in zip(outs_b, weights)).backward()
    ours_grads = {k: p.grad for k, p in to_official(dict(ours.named_parameters())).items()}
    # Looser than the outputs: an element rounded to the other side of the
    # lower clamp bound (1e-4) flips its mask and so its gradient.
    for name, p in official.named_parameters():
        g = ours_grads[name]
        assert (g - p.grad).abs().max() <= 1e-3 * p.grad.abs().max() + 1e-7, name


def test_clamps_bound_the_attention_output():
    """The official abs_clamp points are there: huge q/k/v weights cannot exceed 1e4."""
    official = OfficialStructureVVT(TINY).eval()
    attn = official.block1[0].attn
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            proj.weight.mul_(1e4)
        out = attn(torch.randn(1, 64, 16), 8, 8)
    assert out.abs().max() <= 1e4 * (1 + 1e-6)


def test_classify_pools_the_last_stage():
    official = OfficialStructureVVT(TINY, num_classes=7).eval()
    with torch.no_grad():
        logits = official.classify(torch.randn(1, 3, 64, 96))
    assert logits.shape == (1, 7)
    with pytest.raises(ValueError, match='no head'):
        OfficialStructureVVT(TINY).classify(torch.randn(1, 3, 64, 64))
