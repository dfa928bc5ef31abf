"""build_model_from_config: the config's library builds the model, nothing is downloaded."""
from __future__ import annotations

from mmengine.config import Config

from vvt_mm.runtime import build_model_from_config


def classifier_cfg() -> Config:
    return Config(dict(
        default_scope='mmpretrain',
        data_preprocessor=dict(num_classes=3, mean=[0., 0., 0.], std=[1., 1., 1.]),
        model=dict(type='ImageClassifier',
                   backbone=dict(type='VVT', arch=dict(embed_dims=[8, 16], num_heads=[1, 2],
                                                       depths=[1, 1], mlp_ratios=[2, 2]),
                                 out_indices=(1, ),
                                 init_cfg=dict(type='Pretrained', checkpoint='nowhere.pth')),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=3, in_channels=16))))


def test_classifier_builds_in_its_scope_without_its_pretrained_weights():
    cfg = classifier_cfg()
    model = build_model_from_config(cfg)
    assert type(model).__name__ == 'ImageClassifier'
    assert type(model.backbone).__name__ == 'VVT'
    assert cfg.model.backbone.init_cfg is None
    # The runner's placement of a top-level data preprocessor.
    assert cfg.model.data_preprocessor.num_classes == 3
    model.init_weights()  # would fail on 'nowhere.pth' if the init_cfg were kept


def test_drop_pretrained_false_keeps_init_cfg():
    cfg = classifier_cfg()
    build_model_from_config(cfg, drop_pretrained=False)
    assert cfg.model.backbone.init_cfg.checkpoint == 'nowhere.pth'
