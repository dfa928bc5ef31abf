"""Every backbone's LayerNorms come from its config, with the official epsilons by default.

A norm config is given with an epsilon no backbone uses by default, so a norm
that ignores the config (a literal inside a module) keeps its own epsilon and
is named in the failure.
"""
from __future__ import annotations

import pytest
import torch.nn as nn

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA

TOKEN_EPS, SECOND_EPS = 1e-3, 1e-2


def vitaev2_tiny_arch() -> dict:
    return dict(embed_dims=[4, 4, 8, 8], token_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                nc_heads=[1, 2, 2, 2], rc_heads=[1, 1, 2, 2], nc_groups=[1, 2, 2, 4],
                rc_groups=[1, 2, 2, 2], wide_pcm=False)


def pyramid_tiny_arch(**extra) -> dict:
    return dict(embed_dims=[8, 16, 16, 16], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[1, 1, 1, 1], **extra)


# (backbone, tiny arch, name of the second norm option, which LayerNorms it sets).
CASES = {
    'VVT': (VVT, pyramid_tiny_arch(), 'patch_norm_cfg', lambda name: 'patch_embed' in name),
    'LVT': (LVT, pyramid_tiny_arch(mixers=['csa', 'rasa', 'rasa', 'rasa']),
            'patch_norm_cfg', lambda name: 'patch_embed' in name),
    'LocalViTPVT': (LocalViTPVT, pyramid_tiny_arch(), 'patch_norm_cfg',
                    lambda name: 'patch_embed' in name),
    'LocalViT': (LocalViT, dict(embed_dims=16, num_heads=2, depth=2, mlp_ratio=2),
                 None, lambda name: False),
    'ViTAEv2VSA': (ViTAEv2VSA, vitaev2_tiny_arch(), 'reduction_norm_cfg',
                   lambda name: '.reduction.' in name),
}

# The official epsilons: (token norms, second option's norms).
OFFICIAL_EPS = {'VVT': (1e-6, 1e-5), 'LVT': (1e-5, 1e-5), 'LocalViTPVT': (1e-6, 1e-5),
                'LocalViT': (1e-6, None), 'ViTAEv2VSA': (1e-6, 1e-5)}


def backbone_layer_norms(model: nn.Module) -> dict[str, float]:
    """Epsilon of every LayerNorm the backbone owns (token mixers' own norms aside)."""
    return {name: m.eps for name, m in model.named_modules()
            if isinstance(m, nn.LayerNorm) and '.attn.' not in f'.{name}.'}


@pytest.mark.parametrize('family', sorted(CASES))
def test_norm_configs_reach_every_layer_norm(family):
    backbone, arch, second_option, is_second = CASES[family]
    options = dict(norm_cfg=dict(type='LN', eps=TOKEN_EPS))
    if second_option:
        options[second_option] = dict(type='LN', eps=SECOND_EPS)
    norms = backbone_layer_norms(backbone(arch=arch, **options))
    assert norms, family
    wrong = {name: eps for name, eps in norms.items()
             if eps != (SECOND_EPS if is_second(name) else TOKEN_EPS)}
    assert not wrong, f'{family}: these LayerNorms ignore the norm configs: {wrong}'
    if second_option:
        assert any(is_second(name) for name in norms), family


@pytest.mark.parametrize('family', sorted(CASES))
def test_default_norms_keep_the_official_epsilons(family):
    backbone, arch, _, is_second = CASES[family]
    token_eps, second_eps = OFFICIAL_EPS[family]
    norms = backbone_layer_norms(backbone(arch=arch))
    wrong = {name: eps for name, eps in norms.items()
             if eps != (second_eps if is_second(name) else token_eps)}
    assert not wrong, f'{family}: not the official epsilon: {wrong}'
