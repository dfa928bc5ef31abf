"""ViTAEv2-VSA backbone: official variants, shapes on any input, options, registries."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import ViTAEv2VSA
from vvt_mm.models.layers import NormalCell, VariedSizeWindowAttention


def tiny_arch() -> dict:
    return dict(embed_dims=[4, 4, 8, 8], token_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                nc_heads=[1, 2, 2, 2], rc_heads=[1, 1, 2, 2], nc_groups=[1, 2, 2, 4],
                rc_groups=[1, 2, 2, 2], wide_pcm=False)


def expected_hw(h: int, w: int) -> list[tuple[int, int]]:
    """Stage maps at strides 4/8/16/32, rounding up (inputs are padded, never cropped)."""
    return [(math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)]


def test_param_count_of_s_matches_the_official_19_8m_with_its_classifier_head():
    """19.8M (paper/README) counts the 1000-class head: 19.77M with it, 19.26M without.

    The 0.1M tolerance covers the rounding of the published number (19.8 is given
    to one decimal: +-0.05M) plus slack; the 0.51M head is well outside it.
    """
    backbone = sum(p.numel() for p in ViTAEv2VSA(arch='s').parameters())
    head = 512 * 1000 + 1000
    assert abs((backbone + head) / 1e6 - 19.8) <= 0.1, backbone + head
    assert abs(backbone / 1e6 - 19.8) > 0.4


@pytest.mark.parametrize('arch,dims,depths,heads,rc_heads,wide', [
    ('s', [64, 128, 256, 512], [2, 2, 8, 2], [2, 4, 8, 16], [2, 2, 4, 8], False),
    ('48m', [96, 192, 384, 768], [2, 2, 11, 2], [3, 6, 12, 24], [3, 6, 12, 24], True),
    ('b', [128, 256, 512, 1024], [2, 2, 12, 2], [4, 8, 16, 32], [4, 8, 16, 32], True),
])
def test_variants_are_built_with_the_official_hyper_parameters(arch, dims, depths, heads,
                                                               rc_heads, wide):
    model = ViTAEv2VSA(arch=arch)
    embed = model.arch['embed_dims']
    for i, stage in enumerate(model.stages):
        rc = stage.reduction
        assert len(stage.blocks) == depths[i]
        assert rc.attn.num_heads == rc_heads[i] and rc.attn.out_dims == dims[i]
        assert rc.prm.out_channels == embed[i] * [4, 3, 2, 2][i]
        assert rc.prm.convs[0].kernel_size == ((7, 7) if i == 0 else (3, 3))
        assert rc.pcm[0].out_channels == (2 * dims[i] if wide else embed[i])
        assert rc.pcm[0].groups == [1, 16, 32, 64][i]
        nc = stage.blocks[0]
        assert nc.attn.num_heads == heads[i] and nc.attn.window_size == 7
        assert nc.pcm[0].groups == [1, 32, 64, 128][i] and nc.pcm[0].out_channels == 4 * dims[i]
        assert nc.cpe.kernel_size == (7, 7) and nc.norm1.eps == 1e-6 and rc.norm1.eps == 1e-5


@pytest.mark.parametrize('hw', [(64, 64), (48, 80), (45, 71), (7, 13)])
def test_outputs_are_nchw_maps_at_strides_4_8_16_32_for_any_size(hw):
    """Sizes not divisible by 32, non-square, and maps smaller than a 7x7 window."""
    model = ViTAEv2VSA(arch=tiny_arch()).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert len(outs) == 4
    for out, dims, (h, w) in zip(outs, tiny_arch()['token_dims'], expected_hw(*hw)):
        assert out.shape == (2, dims, h, w)
        assert torch.isfinite(out).all()


def test_real_s_arch_runs_on_a_non_square_input_not_divisible_by_32():
    model = ViTAEv2VSA(arch='s').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 50, 36))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    assert [tuple(o.shape[2:]) for o in outs] == expected_hw(50, 36)


def test_gradcheck_of_a_tiny_instance():
    model = ViTAEv2VSA(arch=tiny_arch(), window_size=3, drop_path_rate=0.).double().eval()
    with torch.no_grad():  # move the windows so sampling is not at pixel centres
        for m in model.modules():
            if isinstance(m, VariedSizeWindowAttention):
                m.sampling_offsets[2].bias.uniform_(-0.3, 0.3)
                m.sampling_scales[2].bias.uniform_(-0.3, 0.3)
    x = torch.randn(1, 3, 8, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t)[-1], (x, ), eps=1e-6, atol=1e-5,
                                    fast_mode=True)
    sum(o.square().mean() for o in model(x.detach())).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize('alias,name', [('S', 'small'), ('B', 'base')])
def test_short_arch_aliases(alias, name):
    assert ViTAEv2VSA.arch_zoo[alias.lower()] == ViTAEv2VSA.arch_zoo[name]


def test_wrong_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown arch 'huge'.*'48m'.*'small'"):
        ViTAEv2VSA(arch='huge')
    with pytest.raises(ValueError, match='lacks'):
        ViTAEv2VSA(arch=dict(embed_dims=[8, 8, 8, 8]))
    bad = dict(tiny_arch(), depths=[1, 1, 1])
    with pytest.raises(ValueError, match='needs 4 entries'):
        ViTAEv2VSA(arch=bad)


def test_out_indices_select_and_validate():
    model = ViTAEv2VSA(arch=tiny_arch(), out_indices=(1, -1)).eval()
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [8, 16]
    with pytest.raises(ValueError, match='out of range'):
        ViTAEv2VSA(arch=tiny_arch(), out_indices=(0, 4))


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = ViTAEv2VSA(arch=tiny_arch(), frozen_stages=2)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())


def test_activation_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = ViTAEv2VSA(arch=tiny_arch(), drop_path_rate=0.).eval()
    ckpt = ViTAEv2VSA(arch=tiny_arch(), drop_path_rate=0., with_cp=True).eval()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 24)
    grads = []
    for model in (plain, ckpt):
        sum(o.square().mean() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_drop_path_increases_linearly_over_all_normal_cells():
    model = ViTAEv2VSA(arch='s', drop_path_rate=0.2)
    probs = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.stages for b in s.blocks]
    assert len(probs) == 14
    assert probs[0] == 0.0 and math.isclose(probs[-1], 0.2, rel_tol=1e-6)
    assert all(b > a for a, b in zip(probs, probs[1:]))


def test_init_weights_starts_from_window_attention_and_unit_norms():
    model = ViTAEv2VSA(arch=tiny_arch())
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, VariedSizeWindowAttention):
            assert m.sampling_offsets[2].weight.abs().sum() == 0
            assert m.sampling_scales[2].bias.abs().sum() == 0
            assert m.relative_position_bias_table.std() < 0.1
        if isinstance(m, NormalCell):
            assert (m.norm1.weight == 1).all() and (m.pcm[1].bias == 0).all()
            assert m.ffn.fc1.bias.abs().sum() == 0


def test_pretrained_argument_is_deprecated_but_works(tmp_path):
    src = ViTAEv2VSA(arch=tiny_arch())
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    model = ViTAEv2VSA(arch=tiny_arch(), init_cfg=dict(type='Pretrained',
                                                       checkpoint=str(path),
                                                       prefix='backbone.'))
    model.init_weights()
    for key, value in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    with pytest.warns(DeprecationWarning, match='init_cfg'):
        ViTAEv2VSA(arch=tiny_arch(), pretrained=str(path))
    with pytest.raises(TypeError, match='pretrained must be'):
        ViTAEv2VSA(arch=tiny_arch(), pretrained=3)


@pytest.mark.parametrize('registry_module', [
    'mmengine.registry', 'mmseg.registry', 'mmdet.registry', 'mmpretrain.registry'
])
def test_builds_from_every_library_registry(registry_module):
    registry = pytest.importorskip(registry_module).MODELS
    model = registry.build(dict(type='ViTAEv2VSA', arch=tiny_arch(), out_indices=(3, )))
    assert isinstance(model, ViTAEv2VSA)
    assert model(torch.randn(1, 3, 64, 48))[0].shape == (1, 16, 2, 2)


def test_bad_input_fails_early_with_the_fix():
    model = ViTAEv2VSA(arch=tiny_arch())
    with pytest.raises(ValueError, match='3-channel'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='NCHW'):
        model(torch.randn(3, 32, 32))


@pytest.mark.parametrize('config,scope', [('configs/vitaev2_vsa_s_in1k.py', 'mmpretrain'),
                                          ('configs/fpn_vitaev2_vsa_s_ade20k.py', 'mmseg')])
def test_entry_configs_build_the_backbone_their_heads_expect(config, scope):
    from pathlib import Path

    from mmengine.config import Config
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    cfg = Config.fromfile(str(Path(__file__).parents[3] / config))
    assert cfg.custom_imports['imports'] == ['vvt_mm']
    backbone_cfg = dict(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.pop('pcm_norm_cfg', None)  # SyncBN needs a process group
    backbone = registry.build(backbone_cfg)
    dims = [backbone.embed_dims[i] for i in backbone.out_indices]
    if scope == 'mmseg':
        assert cfg.model.neck.in_channels == dims
    else:
        assert [cfg.model.head.in_channels] == dims
