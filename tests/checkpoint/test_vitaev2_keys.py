"""Official ViTAEv2-VSA checkpoint layout -> ours: full key set, wrappers, failures."""
from __future__ import annotations

import pytest
import torch

from vvt_mm.checkpoint import (
    convert_vitaev2_vsa,
    is_official_vitaev2_vsa,
    load_pretrained,
    read_checkpoint,
)
from vvt_mm.models.backbones import ViTAEv2VSA

# ViTAEv2-VSA-S as the official code builds it (REFERENCE.md; models.py `ViTAEv2_VSA_S`).
S = dict(embed=[64, 64, 128, 256], token=[64, 128, 256, 512], depth=[2, 2, 8, 2],
         nc_heads=[2, 4, 8, 16], rc_heads=[2, 2, 4, 8], nc_groups=[1, 32, 64, 128],
         rc_groups=[1, 16, 32, 64], kernels=[7, 3, 3, 3],
         dilations=[[1, 2, 3, 4], [1, 2, 3], [1, 2], [1, 2]])
WINDOW = 7
# A small custom arch for the file round trips (a full S file is ~80 MB).
TINY = dict(S, embed=[4, 4, 8, 8], token=[8, 8, 16, 16], depth=[1, 1, 2, 1],
            nc_heads=[1, 2, 2, 2], rc_heads=[1, 1, 2, 2], nc_groups=[1, 2, 2, 4],
            rc_groups=[1, 2, 2, 2])


def ours(a: dict) -> ViTAEv2VSA:
    return ViTAEv2VSA(arch=dict(embed_dims=a['embed'], token_dims=a['token'],
                                depths=a['depth'], nc_heads=a['nc_heads'],
                                rc_heads=a['rc_heads'], nc_groups=a['nc_groups'],
                                rc_groups=a['rc_groups'], wide_pcm=False))


def official_shapes(a: dict = S, num_classes: int = 1000, wide_pcm: bool = False) -> dict:
    """Official key -> shape, written from the official module structure (not ours)."""
    shapes = {}

    def conv(name, cin, cout, k, groups=1, bias=True):
        shapes[f'{name}.weight'] = (cout, cin // groups, k, k)
        if bias:
            shapes[f'{name}.bias'] = (cout, )

    def bn(name, c):
        for t in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{name}.{t}'] = (c, )
        shapes[f'{name}.num_batches_tracked'] = ()

    def ln(name, c):
        shapes[f'{name}.weight'] = shapes[f'{name}.bias'] = (c, )

    def linear(name, cin, cout):
        shapes[f'{name}.weight'], shapes[f'{name}.bias'] = (cout, cin), (cout, )

    def vsa(name, cin, cout, heads):
        conv(f'{name}.sampling_offsets.2', cin, 2 * heads, 1)
        conv(f'{name}.sampling_scales.2', cin, 2 * heads, 1)
        conv(f'{name}.qkv', cin, 3 * cout, 1)
        conv(f'{name}.proj', cout, cout, 1)
        shapes[f'{name}.relative_position_bias_table'] = ((2 * WINDOW - 1) ** 2, heads)
        shapes[f'{name}.relative_position_index'] = (WINDOW ** 2, WINDOW ** 2)

    cin = 3
    for i in range(4):
        rc, e, t = f'layers.{i}.RC', a['embed'][i], a['token'][i]
        mid = 2 * t if wide_pcm else e
        g = a['rc_groups'][i]
        conv(f'{rc}.PCM.0', cin, mid, 3, g)
        bn(f'{rc}.PCM.1', mid)
        conv(f'{rc}.PCM.3', mid, mid, 3, g)
        bn(f'{rc}.PCM.4', mid)
        conv(f'{rc}.PCM.6', mid, t, 3, g)
        for j, _ in enumerate(a['dilations'][i]):
            conv(f'{rc}.PRM.convs.{j}.0', cin, e, a['kernels'][i])
        prm = e * len(a['dilations'][i])
        ln(f'{rc}.norm1', prm)
        conv(f'{rc}.pos', prm, prm, 7, groups=prm)
        vsa(f'{rc}.attn', prm, t, a['rc_heads'][i])
        ln(f'{rc}.norm2', t)
        linear(f'{rc}.mlp.fc1', t, t)
        linear(f'{rc}.mlp.fc2', t, t)
        for j in range(a['depth'][i]):
            nc, g = f'layers.{i}.NC.{j}', a['nc_groups'][i]
            ln(f'{nc}.norm1', t)
            conv(f'{nc}.pos', t, t, 7, groups=t)
            vsa(f'{nc}.attn', t, t, a['nc_heads'][i])
            ln(f'{nc}.norm2', t)
            linear(f'{nc}.mlp.fc1', t, 4 * t)
            linear(f'{nc}.mlp.fc2', 4 * t, t)
            conv(f'{nc}.PCM.0', t, 4 * t, 3, g)
            bn(f'{nc}.PCM.1', 4 * t)
            conv(f'{nc}.PCM.3', 4 * t, t, 3, g)
            bn(f'{nc}.PCM.4', t)
            conv(f'{nc}.PCM.6', t, t, 3, g)
        cin = t
    if num_classes:
        linear('head', a['token'][-1], num_classes)
    return shapes


# The wide-PCM variants as the official code builds them (`ViTAEv2_VSA_widePCM_48M/_B`).
M48 = dict(S, embed=[96, 96, 192, 384], token=[96, 192, 384, 768], depth=[2, 2, 11, 2],
           nc_heads=[3, 6, 12, 24], rc_heads=[3, 6, 12, 24])
B = dict(S, embed=[128, 128, 256, 512], token=[128, 256, 512, 1024], depth=[2, 2, 12, 2],
         nc_heads=[4, 8, 16, 32], rc_heads=[4, 8, 16, 32])


def official_state_dict(**kwargs) -> dict:
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in official_shapes(**kwargs).items():
        if key.endswith('num_batches_tracked') or key.endswith('relative_position_index'):
            sd[key] = torch.zeros(shape, dtype=torch.long)
        else:
            sd[key] = torch.randn(shape, generator=gen) * 0.02
    return sd


def test_official_s_key_set_loads_with_nothing_missing_or_unexpected():
    official = official_state_dict()
    assert len(official) == 670 + 2  # 670 backbone tensors in the official S + head
    converted = convert_vitaev2_vsa(official)
    # Only the 18 derived relative_position_index buffers (4 RC + 14 NC) are dropped.
    assert len(converted) == len(official) - 18
    backbone = {k: v for k, v in converted.items() if not k.startswith('head.')}
    model = ViTAEv2VSA(arch='s')
    own = model.state_dict()
    assert set(backbone) == set(own)
    assert all(own[k].shape == v.shape for k, v in backbone.items())
    result = model.load_state_dict(backbone, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert {k for k in converted if k.startswith('head.')} == {'head.fc.weight',
                                                               'head.fc.bias'}


@pytest.mark.parametrize('arch,a,wide', [('s', S, False), ('48m', M48, True), ('b', B, True)])
def test_official_key_set_and_shapes_of_every_variant_map_onto_ours(arch, a, wide):
    official = official_shapes(a=a, wide_pcm=wide)
    converted = convert_vitaev2_vsa(official)  # the values here are shapes
    own = {k: tuple(v.shape) for k, v in ViTAEv2VSA(arch=arch).state_dict().items()}
    assert {k: v for k, v in converted.items() if not k.startswith('head.')} == own


def test_param_count_of_official_s_tensors_equals_ours():
    learnable = sum(torch.Size(s).numel() for k, s in official_shapes(num_classes=0).items()
                    if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked',
                                       'relative_position_index')))
    assert learnable == sum(p.numel() for p in ViTAEv2VSA(arch='s').parameters())


def test_renames_follow_the_cell_structure():
    official = {'layers.2.RC.PRM.convs.1.0.weight': torch.zeros(1),
                'layers.2.RC.PCM.4.running_var': torch.zeros(1),
                'layers.3.NC.1.pos.bias': torch.zeros(1),
                'layers.0.NC.0.mlp.fc2.weight': torch.zeros(1),
                'layers.1.NC.0.attn.sampling_scales.2.bias': torch.zeros(1),
                'layers.1.RC.attn.relative_position_index': torch.zeros(1),
                'head.bias': torch.zeros(1)}
    assert list(convert_vitaev2_vsa(official)) == [
        'stages.2.reduction.prm.convs.1.weight', 'stages.2.reduction.pcm.4.running_var',
        'stages.3.blocks.1.cpe.bias', 'stages.0.blocks.0.ffn.fc2.weight',
        'stages.1.blocks.0.attn.sampling_scales.2.bias', 'head.fc.bias']


def test_ddp_module_prefix_is_stripped():
    official = {'module.layers.0.NC.0.norm1.weight': torch.ones(3)}
    assert is_official_vitaev2_vsa(official)
    assert list(convert_vitaev2_vsa(official)) == ['stages.0.blocks.0.norm1.weight']


def test_our_layout_is_not_mistaken_for_the_official_one():
    ours = ViTAEv2VSA(arch='s').state_dict()
    assert not is_official_vitaev2_vsa(ours)
    assert ViTAEv2VSA.convert_official(ours) is None


@pytest.mark.parametrize('key', ['layers.0.RC.mystery.weight', 'layers.0.NC.0.PRM.x',
                                 'patch_embed1.proj.weight'])
def test_unknown_keys_raise_instead_of_converting_partially(key):
    with pytest.raises(KeyError, match='unexpected key'):
        convert_vitaev2_vsa({'layers.0.NC.0.norm1.weight': torch.ones(1), key: torch.ones(1)})


@pytest.mark.parametrize('wrapper,prefix', [(None, None), ('state_dict', 'backbone.')])
def test_load_pretrained_reports_full_match_for_official_files(tmp_path, wrapper, prefix):
    official = official_state_dict(a=TINY, num_classes=0)
    if prefix:
        official = {prefix + k: v for k, v in official.items()}
    path = tmp_path / 'official.pth'
    torch.save(official if wrapper is None else {wrapper: official}, path)
    model = ours(TINY)
    report = load_pretrained(model, str(path), prefix=prefix)
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    stored = read_checkpoint(str(path))
    stored = stored[wrapper] if wrapper else stored
    torch.testing.assert_close(model.stages[2].blocks[1].cpe.bias,
                               stored[f'{prefix or ""}layers.2.NC.1.pos.bias'])


@pytest.mark.parametrize('use_ema', [True, False])
def test_official_training_checkpoints_load_their_ema_copy_unless_told_not_to(tmp_path,
                                                                              use_ema):
    plain, ema = official_state_dict(a=TINY), official_state_dict(a=TINY)
    ema['layers.0.NC.0.norm1.weight'] = torch.full((8, ), 3.)
    path = tmp_path / 'timm_trainer.pth'
    torch.save({'epoch': 299, 'state_dict': plain, 'state_dict_ema': ema}, path)
    model = ours(TINY)
    model.init_cfg = dict(type='Pretrained', checkpoint=str(path), use_ema=use_ema)
    model.init_weights()
    expected = ema if use_ema else plain
    torch.testing.assert_close(model.stages[0].blocks[0].norm1.weight,
                               expected['layers.0.NC.0.norm1.weight'])
