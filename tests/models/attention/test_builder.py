"""build_attention: every registered name builds; a wrong name lists the valid ones."""
from __future__ import annotations

import pytest

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import attention_names, build_attention

SHORT_NAMES = ['softmax', 'spatial_reduction', 'performer', 'linformer', 'cosformer', 'gc',
               'vicinity_no_locality', 'vicinity']


def test_every_ablation_row_is_registered_under_its_short_and_class_name():
    names = attention_names()
    registered = {n for aliases in names.values() for n in aliases}
    assert set(SHORT_NAMES) <= registered
    for cls_name, aliases in names.items():
        assert cls_name in aliases and len(aliases) == 2


def test_unknown_type_error_lists_every_valid_name():
    with pytest.raises(ValueError) as info:
        build_attention(dict(type='sofmax'), embed_dims=8, num_heads=1)
    message = str(info.value)
    assert "'sofmax'" in message
    for name in SHORT_NAMES:
        assert repr(name) in message


def test_config_without_type_is_rejected_with_the_choices():
    with pytest.raises(TypeError, match='softmax'):
        build_attention(dict(num_features=4), embed_dims=8, num_heads=1)


def test_class_name_and_short_name_build_the_same_module_and_cfg_is_not_mutated():
    cfg = dict(type='SoftmaxAttention', qkv_bias=False)
    mixer = build_attention(cfg, embed_dims=8, num_heads=2)
    assert cfg == dict(type='SoftmaxAttention', qkv_bias=False)
    assert type(mixer) is type(build_attention(dict(type='softmax'), embed_dims=8,
                                               num_heads=2))
    assert mixer.qkv.bias is None
