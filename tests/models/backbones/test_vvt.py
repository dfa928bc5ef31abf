"""VVT backbone: architecture facts, shapes, options, registries, official weights."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import vvt_mm  # noqa: F401
from vvt_mm.checkpoint import convert_vvt
from vvt_mm.models.backbones import VVT

ARCHS = {
    # arch: (depths, mlp ratios, params with a 1000-class head in M, from the paper/official)
    'tiny': ([2, 2, 2, 2], [8, 8, 4, 4], 12.9),
    'small': ([3, 3, 9, 3], [8, 8, 4, 4], 25.5),
    'medium': ([3, 3, 27, 3], [8, 8, 4, 4], 47.9),
    'large': ([4, 4, 36, 4], [4, 4, 4, 4], 61.8),
}
DIMS = [96, 160, 320, 512]


def tiny_arch() -> dict:
    return dict(embed_dims=[16, 24, 32, 48], num_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2])


def expected_hw(h: int, w: int) -> list[tuple[int, int]]:
    """Map sizes after conv 7x7/s4/p3 then three 3x3/s2/p1 convs."""
    sizes = [((h - 1) // 4 + 1, (w - 1) // 4 + 1)]
    for _ in range(3):
        ph, pw = sizes[-1]
        sizes.append(((ph - 1) // 2 + 1, (pw - 1) // 2 + 1))
    return sizes


@pytest.mark.parametrize('hw', [(64, 64), (64, 96), (97, 131), (33, 47)])
def test_outputs_are_nchw_maps_at_strides_4_8_16_32(hw):
    model = VVT(arch=tiny_arch()).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert len(outs) == 4
    for out, dims, (h, w) in zip(outs, tiny_arch()['embed_dims'], expected_hw(*hw)):
        assert out.shape == (2, dims, h, w)
        assert torch.isfinite(out).all()


def test_real_tiny_arch_runs_on_non_square_input():
    model = VVT(arch='tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 100, 68))
    assert [o.shape[1] for o in outs] == DIMS
    assert [tuple(o.shape[2:]) for o in outs] == expected_hw(100, 68)


@pytest.mark.parametrize('arch', list(ARCHS))
def test_param_count_with_linear_head_matches_paper(arch):
    depths, mlp_ratios, paper_millions = ARCHS[arch]
    model = VVT(arch=arch)
    assert model.arch['depths'] == depths and model.arch['mlp_ratios'] == mlp_ratios
    assert model.arch['embed_dims'] == DIMS and model.arch['num_heads'] == [1, 2, 5, 8]
    params = sum(p.numel() for p in model.parameters()) + 512 * 1000 + 1000
    assert abs(params / 1e6 - paper_millions) <= 0.1, params


def test_block_layout_follows_paper_table_1():
    model = VVT(arch='small')
    attn = model.stages[2].blocks[0].attn
    # Feature reduction 2: q, k, v projected to C/2, out_proj back to C.
    assert attn.q_proj.out_features == 160 and attn.out_proj.in_features == 160
    assert attn.num_heads == 5
    ffn = model.stages[0].blocks[0].ffn
    assert ffn.fc1.out_features == 96 * 8 and ffn.dwconv.groups == 96 * 8
    assert model.stages[0].patch_embed.proj.kernel_size == (7, 7)
    assert model.stages[0].patch_embed.proj.stride == (4, 4)
    assert model.stages[1].patch_embed.proj.kernel_size == (3, 3)
    assert model.stages[0].patch_embed.norm.eps == 1e-5
    assert model.stages[0].blocks[0].norm1.eps == 1e-6 and model.stages[0].norm.eps == 1e-6


@pytest.mark.parametrize('alias,name', [('t', 'tiny'), ('S', 'small'), ('m', 'medium'),
                                        ('l', 'large')])
def test_short_arch_aliases(alias, name):
    assert VVT(arch=alias).arch == VVT.arch_zoo[name]


def test_wrong_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown arch 'huge'.*'large'.*'tiny'"):
        VVT(arch='huge')
    with pytest.raises(ValueError, match='lacks'):
        VVT(arch=dict(embed_dims=[8, 8, 8, 8]))


def test_out_indices_select_and_validate():
    model = VVT(arch=tiny_arch(), out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [24, 48]
    with pytest.raises(ValueError, match='out of range'):
        VVT(arch=tiny_arch(), out_indices=(0, 4))


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = VVT(arch=tiny_arch(), frozen_stages=2, drop_path_rate=0.5)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())


def test_activation_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = VVT(arch=tiny_arch(), drop_path_rate=0.)
    ckpt = VVT(arch=tiny_arch(), drop_path_rate=0., with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 80)
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_drop_path_increases_linearly_over_blocks():
    model = VVT(arch='small', drop_path_rate=0.3)
    probs = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0.0
             for s in model.stages for b in s.blocks]
    assert len(probs) == 18
    assert probs[0] == 0.0 and math.isclose(probs[-1], 0.3, rel_tol=1e-6)
    assert all(b > a for a, b in zip(probs, probs[1:]))


def test_pretrained_argument_is_deprecated_but_works(tmp_path):
    src = VVT(arch=tiny_arch())
    path = tmp_path / 'w.pth'
    torch.save(src.state_dict(), path)
    with pytest.warns(DeprecationWarning, match='init_cfg'):
        model = VVT(arch=tiny_arch(), pretrained=str(path))
    model.init_weights()
    for key, value in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    with pytest.raises(TypeError, match='pretrained must be'):
        VVT(arch=tiny_arch(), pretrained=3)


@pytest.mark.parametrize('registry_module', [
    'mmengine.registry', 'mmseg.registry', 'mmdet.registry', 'mmpretrain.registry'
])
def test_builds_from_every_library_registry(registry_module):
    registry = pytest.importorskip(registry_module).MODELS
    model = registry.build(dict(type='VVT', arch='tiny', out_indices=(3, )))
    assert isinstance(model, VVT)
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 512, 2, 2)


# --- official checkpoints -------------------------------------------------------------

def official_vvt_state_dict(arch: str, num_classes: int = 1000) -> dict:
    """Random tensors under the official key names and shapes, built from the facts
    in REFERENCE.md (independently of our module structure)."""
    depths, mlp_ratios, _ = ARCHS[arch]
    sd = {}
    in_ch = 3
    for i in range(4):
        c, k = DIMS[i], 7 if i == 0 else 3
        sd[f'patch_embed{i + 1}.proj.weight'] = torch.randn(c, in_ch, k, k)
        sd[f'patch_embed{i + 1}.proj.bias'] = torch.randn(c)
        sd[f'patch_embed{i + 1}.norm.weight'] = torch.randn(c)
        sd[f'patch_embed{i + 1}.norm.bias'] = torch.randn(c)
        hidden = c * mlp_ratios[i]
        for j in range(depths[i]):
            p = f'block{i + 1}.{j}.'
            for norm in ('norm1', 'norm2'):
                sd[p + f'{norm}.weight'] = torch.randn(c)
                sd[p + f'{norm}.bias'] = torch.randn(c)
            for proj in ('q_proj', 'k_proj', 'v_proj'):
                sd[p + f'attn.{proj}.weight'] = torch.randn(c // 2, c) * 0.05
                sd[p + f'attn.{proj}.bias'] = torch.randn(c // 2) * 0.05
            sd[p + 'attn.out_proj.weight'] = torch.randn(c, c // 2) * 0.05
            sd[p + 'attn.out_proj.bias'] = torch.randn(c) * 0.05
            sd[p + 'attn.se_fc.0.weight'] = torch.randn(c, c) * 0.05
            sd[p + 'attn.se_fc.2.weight'] = torch.randn(c, c) * 0.05
            sd[p + 'mlp.fc1.weight'] = torch.randn(hidden, c) * 0.05
            sd[p + 'mlp.fc1.bias'] = torch.randn(hidden) * 0.05
            sd[p + 'mlp.dwconv.dwconv.weight'] = torch.randn(hidden, 1, 3, 3) * 0.05
            sd[p + 'mlp.dwconv.dwconv.bias'] = torch.randn(hidden) * 0.05
            sd[p + 'mlp.fc2.weight'] = torch.randn(c, hidden) * 0.05
            sd[p + 'mlp.fc2.bias'] = torch.randn(c) * 0.05
        sd[f'norm{i + 1}.weight'] = torch.randn(c)
        sd[f'norm{i + 1}.bias'] = torch.randn(c)
        in_ch = c
    sd['head.weight'] = torch.randn(num_classes, DIMS[-1])
    sd['head.bias'] = torch.randn(num_classes)
    return sd


@pytest.mark.parametrize('arch', list(ARCHS))
def test_conversion_covers_the_official_key_set(arch):
    official = official_vvt_state_dict(arch)
    converted = convert_vvt(official)
    assert len(converted) == len(official)
    backbone = {k: v for k, v in converted.items() if not k.startswith('head.')}
    assert set(converted) - set(backbone) == {'head.fc.weight', 'head.fc.bias'}
    result = VVT(arch=arch).load_state_dict(backbone, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize('wrapper', [None, 'model', 'state_dict'])
def test_init_cfg_loads_official_layout_like_ours(tmp_path, wrapper):
    official = official_vvt_state_dict('tiny')
    path = tmp_path / 'official.pth'
    torch.save(official if wrapper is None else {wrapper: official}, path)
    from_official = VVT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    from_official.init_weights()
    # Our own layout saved under a prefix, as mmseg/mmpretrain checkpoints do.
    ours_path = tmp_path / 'ours.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in from_official.state_dict().items()}}, ours_path)
    from_ours = VVT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(ours_path),
                                               prefix='backbone.'))
    from_ours.init_weights()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(from_official.eval()(x), from_ours.eval()(x)):
            torch.testing.assert_close(a, b)
    # The official norm weights really arrived (not a silent random init).
    torch.testing.assert_close(from_official.stages[3].norm.weight, official['norm4.weight'])


def test_official_layout_forward_matches_an_independent_block_computation():
    """One block computed by hand from official tensors equals our block's output."""
    torch.manual_seed(0)
    official = official_vvt_state_dict('tiny')
    model = VVT(arch='tiny', drop_path_rate=0.).eval()
    model.load_state_dict({k: v for k, v in convert_vvt(official).items()
                           if not k.startswith('head.')})
    c, h, w = 96, 5, 7
    x = torch.randn(1, h * w, c, dtype=torch.float64)

    def g(key):
        return official[f'block1.0.{key}'].double()

    def explicit_block(x):
        y = nn.functional.layer_norm(x, (c, ), g('norm1.weight'), g('norm1.bias'), 1e-6)
        q = torch.relu(y @ g('attn.q_proj.weight').T + g('attn.q_proj.bias'))
        k = torch.relu(y @ g('attn.k_proj.weight').T + g('attn.k_proj.bias'))
        v = y @ g('attn.v_proj.weight').T + g('attn.v_proj.bias')
        idx = torch.arange(h * w, dtype=torch.float64)
        a, b = math.pi / 2 * (idx // w) / h, math.pi / 2 * (idx % w) / w
        s = (q[0] @ k[0].T) * (torch.cos(a[:, None] - a) + torch.cos(b[:, None] - b))
        attn = (s @ v[0]) / (s.sum(-1, keepdim=True) + 1e-4)
        out = attn @ g('attn.out_proj.weight').T + g('attn.out_proj.bias')
        gate = torch.sigmoid(torch.relu(y.mean(1) @ g('attn.se_fc.0.weight').T)
                             @ g('attn.se_fc.2.weight').T)
        x = x + out + out * gate
        y = nn.functional.layer_norm(x, (c, ), g('norm2.weight'), g('norm2.bias'), 1e-6)
        hid = y @ g('mlp.fc1.weight').T + g('mlp.fc1.bias')
        hid = hid.transpose(1, 2).reshape(1, -1, h, w)
        hid = nn.functional.conv2d(hid, g('mlp.dwconv.dwconv.weight'),
                                   g('mlp.dwconv.dwconv.bias'), padding=1,
                                   groups=hid.shape[1])
        hid = nn.functional.gelu(hid.flatten(2).transpose(1, 2))
        return x + hid @ g('mlp.fc2.weight').T + g('mlp.fc2.bias')

    block = model.stages[0].blocks[0].double()
    block.attn.clamp = False  # the explicit formula has no clamps
    with torch.no_grad():
        torch.testing.assert_close(block(x, (h, w)), explicit_block(x))


def test_unknown_attention_type_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown attention type 'flash'.*'vicinity'"):
        VVT(arch=tiny_arch(), attn_cfg=dict(type='flash'))
