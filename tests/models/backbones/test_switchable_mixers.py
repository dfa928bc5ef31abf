"""LocalViT, LocalViT-PVT, LVT and ViTAEv2-VSA: the token mixer is a config choice.

The official mixers stay the defaults (their keys and numerics are checked by
tests/checkpoint); here another registered mixer builds, runs and reaches
the blocks, and options a mixer cannot take are refused by name.
"""
from __future__ import annotations

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import (
    PerformerAttention,
    SoftmaxAttention,
    SpatialReductionAttention,
    VicinityAttention,
)
from vvt_mm.models.backbones.localvit import LocalViT
from vvt_mm.models.backbones.localvit_pvt import LocalViTPVT
from vvt_mm.models.backbones.lvt import LVT
from vvt_mm.models.backbones.vitaev2_vsa import ViTAEv2VSA
from vvt_mm.models.layers import (
    ConvolutionalSelfAttention,
    RecursiveAtrousSelfAttention,
    VariedSizeWindowAttention,
)

LOCALVIT = dict(embed_dims=16, num_heads=2, depth=2, mlp_ratio=2, se_reduction=4)
PYRAMID = dict(embed_dims=[8, 16, 16, 16], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
               mlp_ratios=[2, 2, 2, 2])
LVT_ARCH = dict(PYRAMID, sr_ratios=[8, 4, 2, 1], mixers=['csa', 'rasa', 'rasa', 'rasa'])
PVT_ARCH = dict(PYRAMID, sr_ratios=[4, 2, 2, 1])
VITAE_ARCH = dict(embed_dims=[8, 8, 16, 16], token_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                  nc_heads=[1, 2, 2, 2], rc_heads=[1, 1, 2, 2], nc_groups=[1, 2, 2, 4],
                  rc_groups=[1, 1, 2, 2], wide_pcm=False)


def mixers(model, cls):
    return [m for m in model.modules() if isinstance(m, cls)]


def run(model, size=(45, 61)):
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, *size))


# --- LocalViT --------------------------------------------------------------------------


def test_localvit_runs_vicinity_attention_on_the_grid_without_a_class_token():
    model = LocalViT(arch=LOCALVIT, img_size=64, attn_cfg=dict(type='vicinity'),
                     out_indices=(0, 1))
    assert len(mixers(model, VicinityAttention)) == 2
    # Vicinity attention needs the H x W tokens alone: no class token, no extra
    # position embedding.
    assert not model.with_cls_token and 'cls_token' not in model.state_dict()
    assert model.pos_embed.shape == (1, 4 * 4, 16)
    outs = run(model)
    assert [o.shape for o in outs] == [(1, 16, 3, 4)] * 2
    assert all(torch.isfinite(o).all() for o in outs)


def test_localvit_default_is_the_official_softmax_with_a_class_token():
    model = LocalViT(arch=LOCALVIT, img_size=64)
    assert model.with_cls_token and model.pos_embed.shape == (1, 1 + 16, 16)
    attn = model.blocks[0].attn
    assert type(attn) is SoftmaxAttention and attn.qkv.bias is not None


def test_localvit_mixer_without_positions_keeps_the_class_token_for_classification():
    model = LocalViT(arch=LOCALVIT, img_size=64, out_type='cls_token',
                     attn_cfg=dict(type='performer', num_features=8))
    assert len(mixers(model, PerformerAttention)) == 2
    assert run(model)[0].shape == (1, 16)


def test_localvit_grid_mixer_refuses_a_class_token_and_cls_output():
    with pytest.raises(ValueError, match=r"type 'vicinity' \(VicinityAttention\) mixes only "
                       r'the H x W grid tokens.*with_cls_token=False'):
        LocalViT(arch=LOCALVIT, attn_cfg=dict(type='vicinity'), with_cls_token=True)
    with pytest.raises(ValueError, match=r"out_type='cls_token' needs the class token"):
        LocalViT(arch=LOCALVIT, attn_cfg=dict(type='linformer'), out_type='cls_token')


def test_localvit_mixer_option_it_cannot_take_names_the_option_and_the_mixers_that_do():
    with pytest.raises(ValueError) as info:
        LocalViT(arch=LOCALVIT, attn_cfg=dict(type='softmax', sr_ratio=2))
    message = str(info.value)
    assert "'softmax' (SoftmaxAttention) does not take sr_ratio" in message
    for taker in ("'spatial_reduction'", "'vicinity'", "'rasa'"):
        assert taker in message


def test_localvit_unknown_mixer_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown attention type 'vicinty'.*'vsa'"):
        LocalViT(arch=LOCALVIT, attn_cfg=dict(type='vicinty'))


# --- LocalViT-PVT ----------------------------------------------------------------------


def test_localvit_pvt_stages_take_other_mixers_and_their_sr_ratios():
    model = LocalViTPVT(arch=PVT_ARCH, img_size=64,
                        attn_cfgs=[dict(type='vicinity')] * 3 + [dict(type='softmax')])
    found = mixers(model, VicinityAttention)
    assert [m.sr_ratio for m in found] == [4, 2, 2]
    assert type(model.stages[3].blocks[0].attn) is SoftmaxAttention
    assert [o.shape[1:] for o in run(model, (64, 48))] == [(8, 16, 12), (16, 8, 6),
                                                           (16, 4, 3), (16, 2, 2)]


def test_localvit_pvt_last_stage_must_take_the_class_token():
    with pytest.raises(ValueError, match=r"class token, which attn_cfg type 'vicinity'"):
        LocalViTPVT(arch=PVT_ARCH, attn_cfgs=dict(type='vicinity'))
    with pytest.raises(ValueError, match='one config per stage'):
        LocalViTPVT(arch=PVT_ARCH, attn_cfgs=[dict(type='softmax')])


# --- LVT -------------------------------------------------------------------------------


def test_lvt_arch_mixers_are_the_configs_csa_and_rasa():
    torch.manual_seed(0)
    published = LVT(arch=LVT_ARCH, drop_path_rate=0.)
    torch.manual_seed(0)
    explicit = LVT(arch=LVT_ARCH, drop_path_rate=0., attn_cfgs=[
        dict(type='csa')] + [dict(type='rasa', atrous_rates=(1, 3, 5), recursions=2)] * 3)
    assert list(published.state_dict()) == list(explicit.state_dict())
    explicit.load_state_dict(published.state_dict())
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        for a, b in zip(published.eval()(x), explicit.eval()(x)):
            assert torch.equal(a, b)
    assert type(published.stages[0].blocks[0].attn) is ConvolutionalSelfAttention
    rasa = mixers(published, RecursiveAtrousSelfAttention)
    assert [m.sr_ratio for m in rasa] == [4, 2, 1]


def test_lvt_rasa_cfg_still_reaches_the_rasa_stages():
    model = LVT(arch=LVT_ARCH, rasa_cfg=dict(recursions=1, atrous_rates=(1, 2)))
    assert {(m.recursions, m.ds.dilations) for m in
            mixers(model, RecursiveAtrousSelfAttention)} == {(1, (1, 2))}


def test_lvt_any_registered_mixer_per_stage_gets_the_stage_sr_ratio_if_it_takes_one():
    model = LVT(arch=LVT_ARCH, attn_cfgs=dict(type='spatial_reduction'))
    assert [m.sr_ratio for m in mixers(model, SpatialReductionAttention)] == [8, 4, 2, 1]
    model = LVT(arch=LVT_ARCH, attn_cfgs=[dict(type='softmax'), dict(type='vicinity'),
                                          dict(type='csa'), dict(type='rasa')])
    assert [m.sr_ratio for m in mixers(model, VicinityAttention)] == [4]
    assert [o.shape[1] for o in run(model)] == [8, 16, 16, 16]


def test_lvt_refuses_what_a_mixer_cannot_take_and_misfit_attn_cfgs():
    with pytest.raises(ValueError, match=r"'csa' \(ConvolutionalSelfAttention\) does not "
                       r"take recursions; mixers that do: 'rasa'"):
        LVT(arch=LVT_ARCH, attn_cfgs=[dict(type='csa', recursions=2)] * 4)
    with pytest.raises(ValueError, match='one config per stage'):
        LVT(arch=LVT_ARCH, attn_cfgs=[dict(type='csa')] * 3)
    with pytest.raises(ValueError, match='put RASA options in attn_cfgs'):
        LVT(arch=LVT_ARCH, attn_cfgs=dict(type='rasa'), rasa_cfg=dict(recursions=1))
    with pytest.raises(ValueError, match=r"unknown attention type 'sa'"):
        LVT(arch=LVT_ARCH, attn_cfgs=dict(type='sa'))


# --- ViTAEv2-VSA -----------------------------------------------------------------------


def test_vitaev2_cells_take_another_mixer_and_reduction_cells_map_its_width():
    model = ViTAEv2VSA(arch=VITAE_ARCH, window_size=3, attn_cfg=dict(type='vicinity'))
    assert not mixers(model, VariedSizeWindowAttention)
    assert len(mixers(model, VicinityAttention)) == 8
    reduction = model.stages[0].reduction
    # Vicinity attention keeps the PRM width (8 x 4 dilations); a linear maps it to 8.
    assert reduction.attn.embed_dims == 32
    assert tuple(reduction.attn_out.weight.shape) == (8, 32)
    assert model.stages[0].blocks[0].attn_out is None
    outs = run(model, (40, 56))
    assert [o.shape[1:] for o in outs] == [(8, 10, 14), (16, 5, 7), (16, 3, 4), (32, 2, 2)]


def test_vitaev2_default_vsa_takes_options_from_attn_cfg():
    model = ViTAEv2VSA(arch=VITAE_ARCH, window_size=3)
    vsa = mixers(model, VariedSizeWindowAttention)
    assert len(vsa) == 8 and all(m.window_size == 3 for m in vsa)
    # VSA maps the PRM width itself (out_dims): no extra layer, the official keys.
    assert all(getattr(m, 'attn_out', None) is None for m in model.modules())
    model = ViTAEv2VSA(arch=VITAE_ARCH, window_size=3, attn_cfg=dict(type='vsa',
                                                                     qkv_bias=False))
    assert all(m.qkv.bias is None for m in mixers(model, VariedSizeWindowAttention))


def test_vitaev2_refuses_options_the_mixer_cannot_take():
    with pytest.raises(ValueError, match=r"'softmax' \(SoftmaxAttention\) does not take "
                       r"window_size; mixers that do: 'vsa'"):
        ViTAEv2VSA(arch=VITAE_ARCH, attn_cfg=dict(type='softmax', window_size=3))
    with pytest.raises(ValueError, match=r"'vicinity' \(VicinityAttention\) takes no "
                       r'attn_drop, but attn_drop_rate=0.1'):
        ViTAEv2VSA(arch=VITAE_ARCH, attn_cfg=dict(type='vicinity'), attn_drop_rate=0.1)


def test_vsa_as_a_token_mixer_equals_vsa_on_the_map():
    torch.manual_seed(0)
    vsa = VariedSizeWindowAttention(8, 2, out_dims=12, window_size=3).double().eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    tokens = x.flatten(2).transpose(1, 2)
    expected = vsa(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(vsa(tokens, (5, 7)), expected, rtol=0, atol=0)
