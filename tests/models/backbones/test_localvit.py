"""LocalViT (DeiT-based): official sizes, any input size, position embeddings, registries."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import LocalViT
from vvt_mm.models.backbones.localvit import resize_pos_embed


def tiny_arch(**kw) -> dict:
    return dict(dict(embed_dims=8, num_heads=2, depth=3, mlp_ratio=2, channel_attn='se',
                     se_reduction=4), **kw)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# Published sizes with the 1000-class head (README / paper Table 1; REFERENCE.md):
# T 5.91M (README rounds the backbone alone: 5.7M), T-SE4 9.38M, S 22.43M (22.4M).
@pytest.mark.parametrize('arch,published', [('tiny', 5.91), ('tiny-se4', 9.38),
                                            ('small', 22.43)])
def test_param_count_matches_the_official_number_with_a_1000_class_head(arch, published):
    model = LocalViT(arch=arch)
    head = model.embed_dims * 1000 + 1000
    assert abs((n_params(model) + head) / 1e6 - published) <= 0.1, n_params(model) + head


@pytest.mark.parametrize('arch,dims,heads,reduction', [('t', 192, 4, 192), ('t-se4', 192, 4, 4),
                                                       ('s', 384, 8, 384)])
def test_variants_use_the_official_hyper_parameters(arch, dims, heads, reduction):
    model = LocalViT(arch=arch)
    block = model.blocks[0]
    assert len(model.blocks) == 12 and model.pos_embed.shape == (1, 197, dims)
    assert block.attn.num_heads == heads and block.attn.qkv.bias is not None
    assert block.norm1.eps == 1e-6 and model.norm.eps == 1e-6
    assert not hasattr(block, 'norm2')
    assert block.ffn.hidden_dims == 4 * dims
    assert block.ffn.channel_attn.fc1.out_features == 4 * dims // reduction
    assert model.patch_embed.proj.kernel_size == (16, 16)


@pytest.mark.parametrize('hw', [(64, 64), (50, 37), (33, 90), (9, 17)])
def test_outputs_are_stride_16_maps_at_the_chosen_depths_for_any_size(hw):
    """Non-square, not divisible by 16 or 32: the input is padded, grids round up."""
    model = LocalViT(arch=tiny_arch(), out_indices=(0, 1, 2)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    grid = (math.ceil(hw[0] / 16), math.ceil(hw[1] / 16))
    assert [tuple(o.shape) for o in outs] == [(2, 8, *grid)] * 3
    assert all(torch.isfinite(o).all() for o in outs)


def test_real_tiny_arch_on_a_non_square_input():
    model = LocalViT(arch='tiny', out_indices=(2, 5, 8, 11)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 80, 56))
    assert [tuple(o.shape) for o in outs] == [(1, 192, 5, 4)] * 4


def test_position_embeddings_are_resized_bicubically_and_kept_at_the_trained_size():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 4 * 4, 6)
    assert resize_pos_embed(pos, (4, 4), (4, 4), 1) is pos
    out = resize_pos_embed(pos, (4, 4), (3, 5), 1)
    torch.testing.assert_close(out[:, :1], pos[:, :1])
    grid = pos[:, 1:].reshape(1, 4, 4, 6).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(3, 5), mode='bicubic', align_corners=False)
    torch.testing.assert_close(out[:, 1:], expected.flatten(2).transpose(1, 2))


def test_forward_equals_the_block_by_block_computation():
    """patchify + [cls] + resized pos -> blocks (FFN on image tokens only) -> norm."""
    torch.manual_seed(0)
    model = LocalViT(arch=tiny_arch(), img_size=64, out_indices=(1, 2),
                     drop_path_rate=0.).double().eval()
    model.init_weights()
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    tokens = F.conv2d(F.pad(x, (0, 8, 0, 8)), model.patch_embed.proj.weight,
                      model.patch_embed.proj.bias, stride=16)  # (2, 8, 3, 4)
    tokens = tokens.flatten(2).transpose(1, 2)
    pos = resize_pos_embed(model.pos_embed, (4, 4), (3, 4), 1)
    tokens = torch.cat([model.cls_token.expand(2, -1, -1), tokens], 1) + pos
    expected = []
    for i, block in enumerate(model.blocks):
        tokens = tokens + block.attn(block.norm1(tokens), (3, 4))
        image = block.ffn(tokens[:, 1:].transpose(1, 2).reshape(2, 8, 3, 4))
        tokens = torch.cat([tokens[:, :1], image.flatten(2).transpose(1, 2)], 1)
        out = model.norm(tokens) if i == 2 else tokens
        if i in (1, 2):
            expected.append(out[:, 1:].transpose(1, 2).reshape(2, 8, 3, 4))
    for got, want in zip(model(x), expected):
        torch.testing.assert_close(got, want)
    cls_model = LocalViT(arch=tiny_arch(), img_size=64, out_type='cls_token').double().eval()
    cls_model.load_state_dict(model.state_dict())
    (cls, ) = cls_model(x)
    torch.testing.assert_close(cls, model.norm(tokens)[:, 0])


def test_gradcheck_of_a_tiny_instance_and_every_parameter_gets_a_gradient():
    model = LocalViT(arch=tiny_arch(depth=1), img_size=32, drop_path_rate=0.).double()
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 20, 18, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t)[-1], (x, ), eps=1e-6, atol=1e-5,
                                    fast_mode=True)
    model.float().train()  # batch 2: BatchNorm needs more than one value per channel
    model(torch.randn(2, 3, 40, 56))[-1].square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())


def test_activation_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = LocalViT(arch=tiny_arch(), drop_path_rate=0.).eval()
    ckpt = LocalViT(arch=tiny_arch(), drop_path_rate=0., with_cp=True).eval()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 24)
    grads = []
    for model in (plain, ckpt):
        model(x)[0].square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_wrong_arguments_fail_with_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown arch 'base'.*'small'.*'tiny-se4'"):
        LocalViT(arch='base')
    with pytest.raises(ValueError, match='out of range'):
        LocalViT(arch=tiny_arch(), out_indices=(3, ))
    with pytest.raises(ValueError, match='out_type'):
        LocalViT(arch=tiny_arch(), out_type='avg')
    with pytest.raises(ValueError, match='3-channel'):
        LocalViT(arch=tiny_arch())(torch.randn(1, 1, 32, 32))


def test_pretrained_loads_our_layout_with_a_prefix(tmp_path):
    src = LocalViT(arch=tiny_arch())
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    model = LocalViT(arch=tiny_arch(), init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                     prefix='backbone.'))
    model.init_weights()
    for key, value in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    with pytest.warns(DeprecationWarning, match='init_cfg'):
        LocalViT(arch=tiny_arch(), pretrained=str(path))


@pytest.mark.parametrize('registry_module', ['mmseg.registry', 'mmdet.registry',
                                             'mmpretrain.registry'])
def test_builds_from_every_library_registry(registry_module):
    registry = pytest.importorskip(registry_module).MODELS
    model = registry.build(dict(type='LocalViT', arch=tiny_arch(), out_indices=(0, 2)))
    assert isinstance(model, LocalViT)
    assert [o.shape for o in model(torch.randn(1, 3, 48, 40))] == [(1, 8, 3, 3)] * 2


@pytest.mark.parametrize('config,scope', [('configs/localvit_t_in1k.py', 'mmpretrain'),
                                          ('configs/fpn_localvit_t_ade20k.py', 'mmseg')])
def test_entry_configs_build_the_backbone_their_necks_and_heads_expect(config, scope):
    from pathlib import Path

    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    cfg = Config.fromfile(str(Path(__file__).parents[3] / config))
    # Other tests may leave another library's scope current; build in ours.
    with DefaultScope.overwrite_default_scope(scope):
        assert cfg.custom_imports['imports'] == ['vvt_mm']
        backbone_cfg = dict(cfg.model.backbone)
        backbone_cfg.pop('init_cfg', None)
        backbone_cfg.pop('ffn_norm_cfg', None)  # SyncBN needs a process group
        backbone = registry.build(backbone_cfg).eval()
        with torch.no_grad():
            outs = backbone(torch.randn(1, 3, 64, 48))
        if scope == 'mmseg':
            assert cfg.model.neck.in_channels == [o.shape[1] for o in outs]
            neck_cfg = dict(cfg.model.neck)
            neck_cfg.pop('norm_cfg', None)
            pyramid = registry.build(neck_cfg)(outs)
            # scales 4, 2, 1, 0.5 of the stride-16 grid (4, 3); 0.5 floors 3 to 1
            assert [p.shape[2:] for p in pyramid] == [(16, 12), (8, 6), (4, 3), (2, 1)]
            assert cfg.model.decode_head.in_channels == [p.shape[1] for p in pyramid]
        else:
            assert outs[0].shape == (1, cfg.model.head.in_channels)
