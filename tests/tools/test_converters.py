"""tools/model_converters/vvt2mm.py: official VVT weights -> mmpretrain / backbone files."""
from __future__ import annotations

import importlib

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import vvt_mm  # noqa: F401
from vvt_mm.models.backbones import VVT
from vvt_mm.testing import ROOT, load_tool, official_checkpoint

vvt2mm = load_tool('tools/model_converters/vvt2mm.py')


def test_classifier_file_loads_strictly_into_the_config_and_reproduces_the_logits(tmp_path):
    src, dst = tmp_path / 'vvt_tiny.pth', tmp_path / 'vvt_tiny_in1k-mm.pth'
    backbone, head = official_checkpoint(src)
    vvt2mm.main([str(src), str(dst)])

    saved = torch.load(dst, map_location='cpu', weights_only=True)
    state = saved['state_dict']
    assert set(state) == {f'backbone.{k}' for k in backbone.state_dict()} | {
        'head.fc.weight', 'head.fc.bias'}
    cfg = Config.fromfile(str(ROOT / 'configs' / 'vvt_t_in1k.py'))
    registry = importlib.import_module('mmpretrain.registry').MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = registry.build(cfg.model).eval()
    model.load_state_dict(state, strict=True)

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = head(backbone(x)[-1].mean(dim=(2, 3)))  # official: mean of tokens
        got = model(x, mode='tensor')
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_backbone_only_file_has_bare_stage_keys_and_initialises_vvt(tmp_path):
    src, dst = tmp_path / 'vvt_tiny.pth', tmp_path / 'pretrained' / 'vvt_tiny.pth'
    backbone, _ = official_checkpoint(src)
    vvt2mm.main([str(src), str(dst), '--backbone-only'])
    state = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert set(state) == set(backbone.state_dict())
    # What an mmseg/mmdet config does with it: init_cfg=dict(type='Pretrained', ...).
    model = VVT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(dst))).eval()
    model.init_weights()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), backbone(x)):
            torch.testing.assert_close(a, b)


def test_file_already_in_our_layout_is_rewrapped_not_renamed(tmp_path):
    src, mid, dst = tmp_path / 'o.pth', tmp_path / 'mm.pth', tmp_path / 'again.pth'
    official_checkpoint(src)
    vvt2mm.main([str(src), str(mid)])
    vvt2mm.main([str(mid), str(dst), '--backbone-only'])
    first = torch.load(mid, weights_only=True)['state_dict']
    second = torch.load(dst, weights_only=True)['state_dict']
    assert set(second) == {k[len('backbone.'):] for k in first if k.startswith('backbone.')}


def test_a_non_vvt_checkpoint_is_refused_with_its_keys(tmp_path, capsys):
    src = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, src)
    with pytest.raises(SystemExit, match='not a VVT checkpoint.*conv1.weight'):
        vvt2mm.main([str(src), str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit, match='does not exist'):
        vvt2mm.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')])
