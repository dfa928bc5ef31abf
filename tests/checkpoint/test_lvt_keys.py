"""Official LVT checkpoint layouts (classification ``lvt_cls``, downstream) -> ours."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vvt_mm.checkpoint import convert_lvt, is_official_lvt
from vvt_mm.checkpoint.loading import load_state_dict_with_report
from vvt_mm.models.backbones import LVT
from vvt_mm.models.layers import ConvolutionalSelfAttention

DIMS, HEADS, MLP, SR = [64, 64, 160, 256], [2, 2, 5, 8], [4, 8, 4, 4], [8, 4, 2, 1]


def official_lvt_shapes(layout: str) -> dict:
    """Keys of ``lite_vision_transformer`` (and ``lvt_cls``), from the official modules.

    ``layout``: ``'cls'`` (the released ImageNet model ``lvt_cls``: class-attention
    post layers, aux head), ``'plain_cls'`` (``lvt`` with its linear head) or
    ``'downstream'`` (``with_cls_head=False``: one LayerNorm per stage).
    """
    shapes = {}

    def ln(name, c):
        shapes[f'{name}.weight'] = shapes[f'{name}.bias'] = (c, )

    def linear(name, cin, cout, bias=True):
        shapes[f'{name}.weight'] = (cout, cin)
        if bias:
            shapes[f'{name}.bias'] = (cout, )

    def conv(name, cin, cout, k, groups=1, bias=True):
        shapes[f'{name}.weight'] = (cout, cin // groups, k, k)
        if bias:
            shapes[f'{name}.bias'] = (cout, )

    cin = 3
    for s, c in enumerate(DIMS):
        conv(f'backbone.{s}.0.proj', cin, c, 7 if s == 0 else 3)
        ln(f'backbone.{s}.0.norm', c)
        hid = c * MLP[s]
        for b in range(2):
            blk = f'backbone.{s}.1.{b}'
            ln(f'{blk}.norm1', c)
            if s == 0:  # CSA, qkv_bias=False
                linear(f'{blk}.attn.attn', c, 81 * HEADS[s])
                conv(f'{blk}.attn.weight', 9 * c, 9 * c, 1, groups=9, bias=False)
                linear(f'{blk}.attn.proj', c, c)
                linear(f'{blk}.mlp.fc1', c, hid)
                linear(f'{blk}.mlp.fc2', hid, c)
            else:  # RASA
                linear(f'{blk}.attn.q', c, c, bias=False)
                linear(f'{blk}.attn.kv', c, 2 * c, bias=False)
                linear(f'{blk}.attn.proj', c, c)
                if SR[s] > 1:
                    conv(f'{blk}.attn.sr', c, c, SR[s])
                    ln(f'{blk}.attn.norm', c)
                shapes[f'{blk}.attn.ds.weight'] = (c, 1, 3, 3)
                conv(f'{blk}.mlp.fc1', c, hid, 1)
                conv(f'{blk}.mlp.depconv', hid, hid, 3, groups=hid)
                conv(f'{blk}.mlp.fc2', hid, c, 1)
            ln(f'{blk}.norm2', c)
        cin = c
    if layout == 'downstream':
        for s, c in enumerate(DIMS):
            ln(f'downstream_norms.{s}', c)
        return shapes
    ln('norm', 256)
    linear('head', 256, 1000)
    if layout == 'cls':
        shapes['cls_token'] = (1, 1, 256)
        linear('aux_head', 256, 1000)
        for i in range(2):
            p = f'post_network.{i}'
            ln(f'{p}.norm1', 256)
            linear(f'{p}.attn.kv', 256, 512, bias=False)
            linear(f'{p}.attn.q', 256, 256, bias=False)
            linear(f'{p}.attn.proj', 256, 256)
            ln(f'{p}.norm2', 256)
            linear(f'{p}.mlp.fc1', 256, 1024)
            linear(f'{p}.mlp.fc2', 1024, 256)
    return shapes


def random_state(shapes):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


@pytest.mark.parametrize('layout,out_indices', [('cls', (3, )), ('plain_cls', (3, )),
                                                ('downstream', (0, 1, 2, 3))])
def test_official_layouts_convert_with_nothing_missing_or_unexpected(layout, out_indices):
    official = random_state(official_lvt_shapes(layout))
    assert is_official_lvt(official)
    converted = convert_lvt(official)
    assert len(converted) == len(official)
    backbone = LVT.convert_official(official)
    assert set(converted) - set(backbone) == {k for k in converted if k.startswith('head.')}
    report = load_state_dict_with_report(LVT(out_indices=out_indices), backbone)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    if layout != 'downstream':
        torch.testing.assert_close(converted['norm3.weight'], official['norm.weight'])
    if layout == 'cls':
        assert {'head.cls_token', 'head.aux_head.weight',
                'head.post_network.1.mlp.fc2.bias', 'head.fc.weight'} <= set(converted)


def test_csa_value_weights_keep_the_official_grouped_conv_meaning():
    """Official: unfold -> (B*n, 9C, 1, 1) position-major -> 1x1 conv, 9 groups."""
    torch.manual_seed(0)
    c = 6
    grouped = torch.nn.Conv2d(9 * c, 9 * c, 1, groups=9, bias=False)
    ours = ConvolutionalSelfAttention(c, num_heads=2)
    state = convert_lvt({'backbone.0.1.0.attn.weight.weight': grouped.weight.detach()})
    ours.value_weight.data.copy_(state['stages.0.blocks.0.attn.value_weight'])
    x = torch.randn(2, c, 5, 7)
    cols = F.unfold(x, 3, padding=1, stride=2)  # (B, C*9, n), channel-major
    n = cols.shape[-1]
    official_in = cols.reshape(2, c, 9, n).permute(0, 3, 2, 1).reshape(2 * n, 9 * c, 1, 1)
    official = grouped(official_in).reshape(2, n, 9, c)
    mine = torch.einsum('bcpn,poc->bnpo', cols.reshape(2, c, 9, n), ours.value_weight)
    torch.testing.assert_close(mine, official)


def test_conv_ffn_weights_become_linear_weights_with_the_same_map():
    conv_w = torch.randn(12, 4, 1, 1)
    state = convert_lvt({'backbone.1.1.0.mlp.fc1.weight': conv_w,
                         'backbone.1.1.0.mlp.depconv.weight': torch.randn(12, 1, 3, 3)})
    linear_w = state['stages.1.blocks.0.ffn.fc1.weight']
    assert 'stages.1.blocks.0.ffn.dwconv.weight' in state
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(F.linear(x.permute(0, 2, 3, 1), linear_w),
                               F.conv2d(x, conv_w).permute(0, 2, 3, 1))


def test_pretrained_init_cfg_loads_the_official_release_directly(tmp_path):
    official = random_state(official_lvt_shapes('cls'))
    path = tmp_path / 'lvt_imagenet.pth.tar'
    torch.save({'state_dict': official}, path)
    model = LVT(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.stages[2].blocks[1].attn.ds.weight,
                               official['backbone.2.1.1.attn.ds.weight'])
    torch.testing.assert_close(model.norm3.bias, official['norm.bias'])
    assert LVT.convert_official(model.state_dict()) is None


def test_unknown_keys_raise_instead_of_converting_partially():
    with pytest.raises(KeyError, match='unexpected'):
        convert_lvt({'backbone.0.1.0.attn.rpb': torch.zeros(1)})
    with pytest.raises(KeyError, match='unexpected'):
        convert_lvt({'backbone.0.0.proj.weight': torch.zeros(1), 'pos_block.0': torch.zeros(1)})
