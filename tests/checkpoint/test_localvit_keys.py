"""Official LocalViT / LocalViT-PVT checkpoint layouts -> ours: complete key sets."""
from __future__ import annotations

import pytest
import torch

from vvt_mm.checkpoint import (
    convert_localvit,
    convert_localvit_pvt,
    is_official_localvit,
    is_official_localvit_pvt,
)
from vvt_mm.checkpoint.loading import load_state_dict_with_report
from vvt_mm.models.backbones import LocalViT, LocalViTPVT


def _bn(shapes, name, c):
    for t in ('weight', 'bias', 'running_mean', 'running_var'):
        shapes[f'{name}.{t}'] = (c, )
    shapes[f'{name}.num_batches_tracked'] = ()


def _linear(shapes, name, cin, cout):
    shapes[f'{name}.weight'], shapes[f'{name}.bias'] = (cout, cin), (cout, )


def _ln(shapes, name, c):
    shapes[f'{name}.weight'] = shapes[f'{name}.bias'] = (c, )


def _locality_ffn(shapes, name, dim, hidden, attn, reduction, eca_kernel=None):
    """``LocalityFeedForward.conv`` (an nn.Sequential), written from the official code."""
    shapes[f'{name}.0.weight'] = (hidden, dim, 1, 1)
    _bn(shapes, f'{name}.1', hidden)
    shapes[f'{name}.3.weight'] = (hidden, 1, 3, 3)
    _bn(shapes, f'{name}.4', hidden)
    last = 6
    if attn == 'se':
        _linear(shapes, f'{name}.6.fc.0', hidden, hidden // reduction)
        _linear(shapes, f'{name}.6.fc.2', hidden // reduction, hidden)
        last = 7
    elif attn == 'eca':
        shapes[f'{name}.6.conv.weight'] = (1, 1, eca_kernel)
        last = 7
    shapes[f'{name}.{last}.weight'] = (dim, hidden, 1, 1)
    _bn(shapes, f'{name}.{last + 1}', dim)


def official_localvit_shapes(dim, depth, mlp_ratio, attn, reduction, eca_kernel=None,
                             num_classes=1000) -> dict:
    """timm 0.3.2 ``VisionTransformer`` keys with LocalViT's blocks (no norm2, no mlp)."""
    shapes = {'cls_token': (1, 1, dim), 'pos_embed': (1, 197, dim),
              'patch_embed.proj.weight': (dim, 3, 16, 16), 'patch_embed.proj.bias': (dim, )}
    for i in range(depth):
        b = f'blocks.{i}'
        _ln(shapes, f'{b}.norm1', dim)
        _linear(shapes, f'{b}.attn.qkv', dim, 3 * dim)
        _linear(shapes, f'{b}.attn.proj', dim, dim)
        _locality_ffn(shapes, f'{b}.conv.conv', dim, int(dim * mlp_ratio), attn, reduction,
                      eca_kernel)
    _ln(shapes, 'norm', dim)
    _linear(shapes, 'head', dim, num_classes)
    return shapes


def official_localvit_pvt_shapes(num_classes=1000) -> dict:
    """``localvit_pvt_tiny``: PVTv1-tiny keys, block MLPs replaced by locality FFNs."""
    dims, mlp, sr, grids = [64, 128, 320, 512], [8, 8, 4, 4], [8, 4, 2, 1], [56, 28, 14, 7]
    shapes, cin = {}, 3
    for s in range(4):
        c, p = dims[s], 4 if s == 0 else 2
        shapes[f'patch_embed{s + 1}.proj.weight'] = (c, cin, p, p)
        shapes[f'patch_embed{s + 1}.proj.bias'] = (c, )
        _ln(shapes, f'patch_embed{s + 1}.norm', c)
        shapes[f'pos_embed{s + 1}'] = (1, grids[s] ** 2 + (s == 3), c)
        for j in range(2):
            b = f'block{s + 1}.{j}'
            _ln(shapes, f'{b}.norm1', c)
            _linear(shapes, f'{b}.attn.q', c, c)
            _linear(shapes, f'{b}.attn.kv', c, 2 * c)
            _linear(shapes, f'{b}.attn.proj', c, c)
            if sr[s] > 1:
                shapes[f'{b}.attn.sr.weight'] = (c, c, sr[s], sr[s])
                shapes[f'{b}.attn.sr.bias'] = (c, )
                _ln(shapes, f'{b}.attn.norm', c)
            _locality_ffn(shapes, f'{b}.conv.conv', c, c * mlp[s], 'se', c)
        cin = c
    shapes['cls_token'] = (1, 1, 512)
    _ln(shapes, 'norm', 512)
    _linear(shapes, 'head', 512, num_classes)
    return shapes


def random_state(shapes: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {k: (torch.randint(0, 9, s, generator=gen) if k.endswith('num_batches_tracked')
                else torch.randn(s, generator=gen)) for k, s in shapes.items()}


def assert_loads_completely(model, converted):
    backbone = {k: v for k, v in converted.items() if not k.startswith('head.')}
    report = load_state_dict_with_report(model, backbone)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert set(converted) - set(backbone) == {'head.fc.weight', 'head.fc.bias'}


@pytest.mark.parametrize('arch,dim,mlp,attn,reduction', [
    ('tiny', 192, 4, 'se', 192),
    ('tiny-se4', 192, 4, 'se', 4),
    ('small', 384, 4, 'se', 384),
    ('tiny-relu6', 192, 6, None, None),
])
def test_every_official_localvit_variant_converts_with_nothing_missing_or_unexpected(
        arch, dim, mlp, attn, reduction):
    official = random_state(official_localvit_shapes(dim, 12, mlp, attn, reduction))
    assert is_official_localvit(official)
    converted = convert_localvit(official)
    assert len(converted) == len(official)
    assert_loads_completely(LocalViT(arch=arch), converted)
    last = 7 if attn else 6
    torch.testing.assert_close(converted['blocks.3.ffn.project.conv.weight'],
                               official[f'blocks.3.conv.conv.{last}.weight'])
    torch.testing.assert_close(converted['blocks.0.ffn.dwconv.bn.running_var'],
                               official['blocks.0.conv.conv.4.running_var'])
    if attn == 'se':
        torch.testing.assert_close(converted['blocks.11.ffn.channel_attn.fc2.bias'],
                                   official['blocks.11.conv.conv.6.fc.2.bias'])


def test_eca_variant_converts_its_1d_conv():
    arch = dict(embed_dims=16, num_heads=2, depth=2, mlp_ratio=4, channel_attn='eca')
    model = LocalViT(arch=arch, img_size=224)
    kernel = model.blocks[0].ffn.channel_attn.conv.kernel_size[0]
    converted = convert_localvit(random_state(
        official_localvit_shapes(16, 2, 4, 'eca', None, eca_kernel=kernel)))
    assert 'blocks.1.ffn.channel_attn.conv.weight' in converted
    assert_loads_completely(model, converted)


def test_official_localvit_pvt_converts_with_nothing_missing_or_unexpected():
    official = random_state(official_localvit_pvt_shapes())
    assert is_official_localvit_pvt(official) and not is_official_localvit(official)
    converted = convert_localvit_pvt(official)
    assert len(converted) == len(official)
    assert_loads_completely(LocalViTPVT(arch='tiny'), converted)
    torch.testing.assert_close(converted['stages.3.pos_embed'], official['pos_embed4'])
    torch.testing.assert_close(converted['stages.0.blocks.1.attn.sr.weight'],
                               official['block1.1.attn.sr.weight'])
    torch.testing.assert_close(converted['stages.2.blocks.0.ffn.channel_attn.fc1.weight'],
                               official['block3.0.conv.conv.6.fc.0.weight'])


def test_pretrained_init_cfg_loads_the_official_file_directly(tmp_path):
    """A config can point at the official release: conversion happens on load."""
    arch = dict(embed_dims=16, num_heads=2, depth=2, mlp_ratio=4, channel_attn='se',
                se_reduction=16)
    official = random_state(official_localvit_shapes(16, 2, 4, 'se', 16))
    path = tmp_path / 'localvit_official.pth'
    torch.save({'model': official}, path)
    model = LocalViT(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.pos_embed, official['pos_embed'])
    torch.testing.assert_close(model.blocks[1].ffn.expand.conv.weight,
                               official['blocks.1.conv.conv.0.weight'])
    # and our own layout is left alone
    assert LocalViT.convert_official(model.state_dict()) is None
    assert LocalViTPVT.convert_official(LocalViTPVT(arch='tiny').state_dict()) is None


@pytest.mark.parametrize('convert,key', [
    (convert_localvit, 'blocks.0.mlp.fc1.weight'),
    (convert_localvit, 'blocks.0.conv.conv.9.weight'),
    (convert_localvit_pvt, 'block1.0.norm2.weight'),
])
def test_unknown_keys_raise_instead_of_converting_partially(convert, key):
    with pytest.raises(KeyError, match='unexpected'):
        convert({key: torch.zeros(1), 'blocks.0.conv.conv.0.weight': torch.zeros(1)})
