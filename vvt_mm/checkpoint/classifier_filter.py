"""Official checkpoints straight into an mmpretrain ``ImageClassifier``, or a loud refusal.

mmpretrain's ``get_model(name, pretrained=path)``, ``load_from`` and
``tools/test.py`` all end in mmengine's ``load_checkpoint(strict=False)``,
which only logs what did not match: an official file (``block1.0.*``,
``head.*``) would load nothing and a VVT-S file would half-fill a VVT-T.

mmpretrain's ``ImageClassifier`` registers its backbone's ``_checkpoint_filter``
as the classifier's load-state-dict pre-hook (meant for third-party weights).
That is the one place that sees the whole file's keys (a backbone only gets
``backbone.*``) without patching mmengine's loader for every checkpoint of the
process, so our backbones hand it :func:`filter_classifier_checkpoint`.
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch.nn as nn
from mmengine.logging import print_log

from .key_layout import strip_prefix, to_classifier_keys
from .loading import CheckpointError, LoadReport, compare_state_dicts

# Below this share of the backbone's tensors, a file is the wrong one (as load_pretrained).
MIN_MATCH_RATIO = 0.5


def filter_classifier_checkpoint(backbone: nn.Module, state_dict: MutableMapping,
                                 prefix: str = '') -> None:
    """Rewrite, in place, the classifier state dict under ``prefix`` for ``backbone``.

    * An official checkpoint (the backbone's ``official_layout``; bare or as
      ``{'model': ...}``, which mmengine does not unwrap) is converted to
      ``backbone.*`` + ``head.fc.*``. Its backbone part must fit exactly:
      a missing, extra or reshaped tensor means another arch and raises.
    * Any other file must fill at least half of the backbone's tensors under
      ``backbone.``, else it raises (wrong file, or backbone-only keys).

    Raises:
        CheckpointError: the file does not fit the backbone.
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys:
        return
    local = {k[len(prefix):]: state_dict[k] for k in keys}
    if isinstance(local.get('model'), Mapping):
        local = dict(local['model'])
    own = backbone.state_dict()
    name = type(backbone).__name__
    layout = getattr(backbone, 'official_layout', None)
    if layout is not None and layout[0](local):
        converted = layout[1](local)
        backbone_part = {k: v for k, v in converted.items() if not k.startswith('head.')}
        report = compare_state_dicts(own, backbone_part)
        if report.missing or report.unexpected or report.shape_mismatch:
            raise CheckpointError(
                f'an official checkpoint of another {name} arch: {_misfit(report)}. Pick the '
                'file of this arch, or the config of the file.')
        local = to_classifier_keys(converted)
        print_log(f'official {name} checkpoint converted on load', logger='current')
    else:
        report = compare_state_dicts(own, strip_prefix(local, 'backbone.', only=True))
        if report.match_ratio < MIN_MATCH_RATIO:
            raise CheckpointError(
                f'the checkpoint fills only {len(report.matched)} of {len(own)} tensors of the '
                f'{name} backbone (keys like {list(local)[:3]}; expected like '
                f'{["backbone." + k for k in list(own)[:2]]}): wrong file, or a backbone-only '
                "checkpoint (load that through model.backbone.init_cfg=dict(type='Pretrained',"
                ' checkpoint=...))?')
    for key in keys:
        del state_dict[key]
    state_dict.update((prefix + k, v) for k, v in local.items())


def _misfit(report: LoadReport, limit: int = 3) -> str:
    def head(items: list) -> str:
        more = f', ... (+{len(items) - limit})' if len(items) > limit else ''
        return ', '.join(str(i) for i in items[:limit]) + more

    parts = []
    if report.missing:
        parts.append(f'{len(report.missing)} backbone tensors missing ({head(report.missing)})')
    if report.unexpected:
        parts.append(f'{len(report.unexpected)} extra ({head(report.unexpected)})')
    if report.shape_mismatch:
        parts.append(f'{len(report.shape_mismatch)} of another shape ('
                     + head([f'{k} {a} vs {b}' for k, a, b in report.shape_mismatch]) + ')')
    return '; '.join(parts)


