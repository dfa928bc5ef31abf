"""LVT backbone: the published 3.4M model, any input size, gradients, registries."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import LVT
from vvt_mm.models.layers import ConvolutionalSelfAttention, RecursiveAtrousSelfAttention


def tiny_arch() -> dict:
    return dict(embed_dims=[4, 4, 6, 8], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1],
                mixers=['csa', 'rasa', 'rasa', 'rasa'])


def expected_hw(h: int, w: int) -> list[tuple[int, int]]:
    return [(math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)]


def test_backbone_param_count_matches_the_published_3_4m():
    """README: 3.4M backbone params; REFERENCE.md: 3.43M (no classifier).

    Hand count of the pieces that differ by stage checks the total independently:
    the total must also equal the sum over stages of the official module shapes.
    """
    model = LVT()
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / 1e6 - 3.43) <= 0.1, total

    def ln(c):
        return 2 * c

    def lin(i, o, bias=True):
        return i * o + (o if bias else 0)

    dims, heads, mlp, sr = [64, 64, 160, 256], [2, 2, 5, 8], [4, 8, 4, 4], [8, 4, 2, 1]
    count, cin = 0, 3
    for s, c in enumerate(dims):
        k = 7 if s == 0 else 3
        count += cin * c * k * k + c + ln(c)  # patch embed
        hid = c * mlp[s]
        for _ in range(2):
            count += 2 * ln(c)
            if s == 0:  # CSA + plain MLP
                count += lin(c, 81 * heads[s]) + 9 * c * c + lin(c, c)
                count += lin(c, hid) + lin(hid, c)
            else:  # RASA + depthwise-conv MLP
                count += lin(c, c, False) + lin(c, 2 * c, False) + lin(c, c) + 9 * c
                if sr[s] > 1:
                    count += c * c * sr[s] ** 2 + c + ln(c)
                count += lin(c, hid) + hid * 9 + hid + lin(hid, c)
        count += ln(c)  # output norm of each stage
        cin = c
    assert total == count


def test_published_arch_uses_csa_then_rasa_with_the_official_settings():
    model = LVT()
    assert [s.blocks[0].attn.__class__ for s in model.stages] == [
        ConvolutionalSelfAttention] + [RecursiveAtrousSelfAttention] * 3
    for stage, sr, heads in zip(model.stages[1:], [4, 2, 1], [2, 5, 8]):
        attn = stage.blocks[0].attn
        assert attn.sr_ratio == sr and attn.num_heads == heads and attn.recursions == 2
        assert attn.ds.dilations == (1, 3, 5) and attn.q.bias is None
    assert model.stages[0].patch_embed.proj.kernel_size == (7, 7)
    assert model.stages[1].patch_embed.proj.stride == (2, 2)
    assert model.norm0.eps == 1e-5 and model.stages[2].blocks[1].norm2.eps == 1e-5


@pytest.mark.parametrize('hw', [(64, 64), (50, 37), (45, 71), (7, 13)])
def test_outputs_are_nchw_maps_at_strides_4_8_16_32_for_any_size(hw):
    model = LVT(arch=tiny_arch()).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    for out, dims, (h, w) in zip(outs, tiny_arch()['embed_dims'], expected_hw(*hw)):
        assert out.shape == (2, dims, h, w)
        assert torch.isfinite(out).all()


def test_real_arch_on_a_non_square_input_not_divisible_by_32():
    model = LVT().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 70, 52))
    assert [o.shape[1] for o in outs] == [64, 64, 160, 256]
    assert [tuple(o.shape[2:]) for o in outs] == expected_hw(70, 52)


def test_gradcheck_of_a_tiny_instance_and_every_parameter_gets_a_gradient():
    model = LVT(arch=tiny_arch(), drop_path_rate=0.).double().eval()
    x = torch.randn(1, 3, 9, 14, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t)[-1], (x, ), eps=1e-6, atol=1e-5,
                                    fast_mode=True)
    # a larger input, so every RASA attends over more than one reduced key
    # (with a single key the softmax is 1 and q gets no gradient)
    model.float().train()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 48))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())


def test_out_indices_select_stages_and_own_their_norms():
    model = LVT(arch=tiny_arch(), out_indices=(1, -1))
    assert [n for n, _ in model.named_children() if n.startswith('norm')] == ['norm1', 'norm3']
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [4, 8]
    with pytest.raises(ValueError, match='out of range'):
        LVT(arch=tiny_arch(), out_indices=(0, 4))


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = LVT(arch=tiny_arch(), frozen_stages=2)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())


def test_activation_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = LVT(arch=tiny_arch(), drop_path_rate=0.)
    ckpt = LVT(arch=tiny_arch(), drop_path_rate=0., with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 24)
    grads = []
    for model in (plain, ckpt):
        sum(o.square().mean() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_wrong_arguments_fail_with_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown arch 'small'.*'lvt'"):
        LVT(arch='small')
    with pytest.raises(ValueError, match='one value per stage'):
        LVT(arch=dict(tiny_arch(), depths=[1, 1, 1]))
    with pytest.raises(ValueError, match="'csa' or 'rasa'"):
        LVT(arch=dict(tiny_arch(), mixers=['csa', 'rasa', 'sa', 'rasa']))
    with pytest.raises(ValueError, match='3-channel'):
        LVT(arch=tiny_arch())(torch.randn(1, 4, 32, 32))


def test_pretrained_loads_our_layout_with_a_prefix(tmp_path):
    src = LVT(arch=tiny_arch())
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    model = LVT(arch=tiny_arch(), init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                prefix='backbone.'))
    model.init_weights()
    for key, value in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


@pytest.mark.parametrize('registry_module', ['mmseg.registry', 'mmdet.registry',
                                             'mmpretrain.registry'])
def test_builds_from_every_library_registry(registry_module):
    registry = pytest.importorskip(registry_module).MODELS
    model = registry.build(dict(type='LVT', arch=tiny_arch(), out_indices=(3, )))
    assert isinstance(model, LVT)
    assert model(torch.randn(1, 3, 64, 48))[0].shape == (1, 8, 2, 2)


@pytest.mark.parametrize('config,scope', [('configs/lvt_in1k.py', 'mmpretrain'),
                                          ('configs/fpn_lvt_ade20k.py', 'mmseg')])
def test_entry_configs_build_the_backbone_their_heads_expect(config, scope):
    from pathlib import Path

    from mmengine.config import Config
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    cfg = Config.fromfile(str(Path(__file__).parents[3] / config))
    assert cfg.custom_imports['imports'] == ['vvt_mm']
    backbone_cfg = dict(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    backbone = registry.build(backbone_cfg)
    dims = [backbone.embed_dims[i] for i in backbone.out_indices]
    if scope == 'mmseg':
        assert cfg.model.neck.in_channels == dims
    else:
        assert [cfg.model.head.in_channels] == dims
