"""LocalViT-PVT: the official 13.5M size, pyramid outputs on any size, registries."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import LocalViTPVT


def tiny_arch() -> dict:
    return dict(embed_dims=[4, 8, 8, 16], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1])


def expected_hw(h: int, w: int) -> list[tuple[int, int]]:
    return [(math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)]


def test_param_count_matches_the_official_13_5m_with_its_classifier_head():
    model = LocalViTPVT(arch='tiny')
    total = sum(p.numel() for p in model.parameters()) + 512 * 1000 + 1000
    assert abs(total / 1e6 - 13.5) <= 0.1, total


def test_tiny_uses_the_official_pvt_tiny_hyper_parameters():
    model = LocalViTPVT(arch='tiny')
    grids = [56, 28, 14, 7]
    for i, stage in enumerate(model.stages):
        dims = [64, 128, 320, 512][i]
        block = stage.blocks[0]
        assert len(stage.blocks) == 2 and block.attn.num_heads == [1, 2, 5, 8][i]
        assert block.attn.sr_ratio == [8, 4, 2, 1][i] and block.attn.q.bias is not None
        assert block.ffn.hidden_dims == dims * [8, 8, 4, 4][i]
        # SE squeezes the hidden width by embed_dims: to mlp_ratio channels.
        assert block.ffn.channel_attn.fc1.out_features == [8, 8, 4, 4][i]
        assert stage.patch_embed.proj.stride == ((4, 4) if i == 0 else (2, 2))
        assert stage.pos_embed.shape == (1, grids[i] ** 2 + (i == 3), dims)
    assert model.norm.eps == 1e-6 and model.stages[0].blocks[0].norm1.eps == 1e-6


@pytest.mark.parametrize('hw', [(64, 64), (50, 37), (45, 71), (9, 13)])
def test_outputs_are_nchw_maps_at_strides_4_8_16_32_for_any_size(hw):
    model = LocalViTPVT(arch=tiny_arch(), img_size=64).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    for out, dims, (h, w) in zip(outs, tiny_arch()['embed_dims'], expected_hw(*hw)):
        assert out.shape == (2, dims, h, w)
        assert torch.isfinite(out).all()


def test_real_tiny_arch_on_a_non_square_input_not_divisible_by_32():
    model = LocalViTPVT(arch='tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 70, 52))
    assert [o.shape[1] for o in outs] == [64, 128, 320, 512]
    assert [tuple(o.shape[2:]) for o in outs] == expected_hw(70, 52)


def test_class_token_output_is_the_normed_last_stage_token():
    torch.manual_seed(0)
    feat = LocalViTPVT(arch=tiny_arch(), img_size=64, out_indices=(3, )).eval()
    cls = LocalViTPVT(arch=tiny_arch(), img_size=64, out_type='cls_token').eval()
    cls.load_state_dict(feat.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (token, ) = cls(x)
        (fmap, ) = feat(x)
        # the same forward by hand for the last stage
        h = x
        for stage in feat.stages[:3]:
            t, hw = stage(h)
            h = t.transpose(1, 2).reshape(2, -1, *hw)
        t, hw = feat.stages[3](h, feat.cls_token.expand(2, -1, -1))
        t = feat.norm(t)
    assert token.shape == (2, 16)
    torch.testing.assert_close(token, t[:, 0])
    torch.testing.assert_close(fmap, t[:, 1:].transpose(1, 2).reshape(2, 16, *hw))


def test_gradcheck_of_a_tiny_instance_and_every_parameter_gets_a_gradient():
    model = LocalViTPVT(arch=tiny_arch(), img_size=32, drop_path_rate=0.).double()
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 18, 13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t)[-1], (x, ), eps=1e-6, atol=1e-5,
                                    fast_mode=True)
    model.float().train()  # batch 2: BatchNorm needs more than one value per channel
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 48))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())


def test_frozen_stages_and_argument_checks():
    model = LocalViTPVT(arch=tiny_arch(), frozen_stages=1)
    model.train()
    assert all(not p.requires_grad for p in model.stages[0].parameters())
    assert not model.stages[0].training and model.stages[1].training
    with pytest.raises(ValueError, match=r"unknown arch 'small'.*'tiny'"):
        LocalViTPVT(arch='small')
    with pytest.raises(ValueError, match='sr_ratio must be 1'):
        LocalViTPVT(arch=dict(tiny_arch(), sr_ratios=[4, 2, 2, 2]))
    with pytest.raises(ValueError, match='out of range'):
        LocalViTPVT(arch=tiny_arch(), out_indices=(4, ))


@pytest.mark.parametrize('registry_module', ['mmseg.registry', 'mmdet.registry',
                                             'mmpretrain.registry'])
def test_builds_from_every_library_registry(registry_module):
    registry = pytest.importorskip(registry_module).MODELS
    model = registry.build(dict(type='LocalViTPVT', arch=tiny_arch(), out_indices=(3, )))
    assert isinstance(model, LocalViTPVT)
    assert model(torch.randn(1, 3, 64, 48))[0].shape == (1, 16, 2, 2)


@pytest.mark.parametrize('config,scope', [('configs/localvit_pvt_t_in1k.py', 'mmpretrain'),
                                          ('configs/fpn_localvit_pvt_t_ade20k.py', 'mmseg')])
def test_entry_configs_build_the_backbone_their_heads_expect(config, scope):
    from pathlib import Path

    from mmengine.config import Config
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    cfg = Config.fromfile(str(Path(__file__).parents[3] / config))
    assert cfg.custom_imports['imports'] == ['vvt_mm']
    backbone_cfg = dict(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.pop('ffn_norm_cfg', None)  # SyncBN needs a process group
    backbone = registry.build(backbone_cfg)
    if scope == 'mmseg':
        assert cfg.model.neck.in_channels == [backbone.embed_dims[i]
                                              for i in backbone.out_indices]
    else:
        assert backbone.out_type == 'cls_token'
        assert cfg.model.head.in_channels == backbone.embed_dims[-1]
