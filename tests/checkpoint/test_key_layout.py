"""One place maps backbone keys + head.* to an ImageClassifier's layout and back."""
from __future__ import annotations

from vvt_mm.checkpoint import strip_prefix, to_classifier_keys


def test_classifier_keys_put_the_backbone_under_backbone_and_keep_the_head():
    converted = {'stages.0.w': 1, 'head.fc.weight': 2, 'head.extra': 3}
    assert list(to_classifier_keys(converted).items()) == [
        ('backbone.stages.0.w', 1), ('head.fc.weight', 2), ('head.extra', 3)]
    kept = to_classifier_keys(converted, keep_head=lambda key: key.startswith('head.fc.'))
    assert list(kept) == ['backbone.stages.0.w', 'head.fc.weight']


def test_strip_prefix_keeps_other_keys_unless_only():
    sd = {'module.backbone.a': 1, 'backbone.b': 2, 'head.c': 3}
    assert list(strip_prefix(sd, 'module.')) == ['backbone.a', 'backbone.b', 'head.c']
    assert dict(strip_prefix(sd, 'backbone.', only=True)) == {'b': 2}
    assert list(strip_prefix(sd, 'backbone.')) == ['module.backbone.a', 'b', 'head.c']
