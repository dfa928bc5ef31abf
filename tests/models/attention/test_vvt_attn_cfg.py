"""The paper's attention ablation as a one-line VVT config switch."""
from __future__ import annotations

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import VVT

ABLATION = {
    # attn_cfg type: the class every block must hold
    'softmax': 'SoftmaxAttention',
    'spatial_reduction': 'SpatialReductionAttention',
    'performer': 'PerformerAttention',
    'linformer': 'LinformerAttention',
    'cosformer': 'CosFormerAttention',
    'gc': 'GlobalContextAttention',
    'vicinity_no_locality': 'VicinityNoLocalityAttention',
    'vicinity': 'VicinityAttention',
}
PVT_V2_SR = [8, 4, 2, 1]


def small_arch() -> dict:
    return dict(embed_dims=[32, 32, 64, 64], num_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2])


def expected_hw(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [((h - 1) // 4 + 1, (w - 1) // 4 + 1)]
    for _ in range(3):
        sizes.append(((sizes[-1][0] - 1) // 2 + 1, (sizes[-1][1] - 1) // 2 + 1))
    return sizes


@pytest.mark.parametrize('attn_type', list(ABLATION))
def test_vvt_tiny_with_each_attention_runs_on_non_square_input(attn_type):
    torch.manual_seed(0)
    sr_ratios = PVT_V2_SR if attn_type == 'spatial_reduction' else [1, 1, 1, 1]
    model = VVT(arch='tiny', attn_cfg=dict(type=attn_type), sr_ratios=sr_ratios)
    model.init_weights()
    model.eval()
    blocks = [b for stage in model.stages for b in stage.blocks]
    assert len(blocks) == 8
    assert {type(b.attn).__name__ for b in blocks} == {ABLATION[attn_type]}
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 72, 100))  # neither side a multiple of 32
    assert [o.shape[1] for o in outs] == [96, 160, 320, 512]
    assert [tuple(o.shape[2:]) for o in outs] == expected_hw(72, 100)
    assert all(torch.isfinite(o).all() for o in outs)


def test_spatial_reduction_takes_each_stages_sr_ratio():
    model = VVT(arch=small_arch(), attn_cfg=dict(type='spatial_reduction'),
                sr_ratios=PVT_V2_SR)
    assert [stage.blocks[0].attn.sr_ratio for stage in model.stages] == PVT_V2_SR


def test_mixer_options_pass_through_attn_cfg():
    model = VVT(arch=small_arch(), attn_cfg=dict(type='performer', num_features=24))
    assert all(stage.blocks[0].attn.projection.shape[0] == 24 for stage in model.stages)


@pytest.mark.parametrize('attn_type', ['vicinity', 'vicinity_no_locality'])
def test_feature_reduction_is_the_mixers_own_option(attn_type):
    """FR reaches every mixer that has it (not only 'vicinity'), from attn_cfg."""
    arch = small_arch()
    default = VVT(arch=arch, attn_cfg=dict(type=attn_type))
    reduced = VVT(arch=arch, attn_cfg=dict(type=attn_type, feature_reduction=4))
    for stage, dims in zip(reduced.stages, arch['embed_dims']):
        assert stage.blocks[0].attn.inner_dims == dims // 4
    for stage, dims in zip(default.stages, arch['embed_dims']):
        assert stage.blocks[0].attn.inner_dims == dims // 2
    with pytest.raises(TypeError, match=r"goes in attn_cfg, e\.g\. attn_cfg=dict\(type="):
        VVT(arch=arch, feature_reduction=4)


def test_norm_cfg_reaches_blocks_and_stage_norms():
    model = VVT(arch=small_arch(), norm_cfg=dict(type='LN', eps=1e-3))
    block = model.stages[0].blocks[0]
    assert block.norm1.eps == block.norm2.eps == model.stages[0].norm.eps == 1e-3
    assert model.stages[0].patch_embed.norm.eps == 1e-5  # patch_norm_cfg is separate
    official = VVT(arch=small_arch())
    assert official.stages[0].norm.eps == 1e-6


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_every_attention_builds_through_the_downstream_registries(scope):
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    x = torch.randn(1, 3, 64, 96)
    for attn_type, cls_name in ABLATION.items():
        sr_ratios = PVT_V2_SR if attn_type == 'spatial_reduction' else None
        model = registry.build(dict(type='VVT', arch=small_arch(), out_indices=(3, ),
                                    attn_cfg=dict(type=attn_type), sr_ratios=sr_ratios))
        assert type(model.stages[0].blocks[0].attn).__name__ == cls_name
        with torch.no_grad():
            (out, ) = model.eval()(x)
        assert out.shape == (1, 64, 2, 3)


def test_unknown_attention_type_fails_naming_the_valid_types():
    with pytest.raises(ValueError) as info:
        VVT(arch=small_arch(), attn_cfg=dict(type='swin_window'))
    message = str(info.value)
    assert 'swin_window' in message
    assert all(repr(name) in message for name in ABLATION)
