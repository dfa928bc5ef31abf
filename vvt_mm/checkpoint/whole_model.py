"""Load a checkpoint into a whole model (classifier, segmentor, detector), or refuse.

mmengine loads ``load_from`` with ``strict=False`` and only logs what did not
match, so evaluating a backbone-only or official ImageNet checkpoint with a
segmentor config -- or a VVT-T checkpoint with a VVT-S config -- scores random
weights and exits 0. Evaluation and inference need *every* tensor of the model
from the file. The one tolerated difference is a classifier layer trained for
another class count (its shape differs; reported, left at its init).

Official checkpoints (``is_official`` of the backbone's ``official_layout``)
are converted: backbone keys go under ``backbone.``, the official classifier
becomes ``head.fc.*`` where the model has such a head.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch.nn as nn

from .key_layout import strip_prefix, to_classifier_keys
from .loading import (
    CheckpointError,
    LoadReport,
    compare_state_dicts,
    extract_state_dict,
    read_checkpoint,
)

__all__ = ['CheckpointMismatchError', 'whole_model_state_dict', 'check_whole_model',
           'load_whole_model', 'describe_load']


class CheckpointMismatchError(CheckpointError):
    """A checkpoint that does not hold the weights of the whole model."""


def _examples(keys: list[str], limit: int = 3) -> str:
    more = f', ... (+{len(keys) - limit})' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def whole_model_state_dict(model: nn.Module, checkpoint: Mapping) -> tuple[dict, str]:
    """The checkpoint's tensors in ``model``'s key layout, and a name of that layout."""
    state_dict = strip_prefix(extract_state_dict(checkpoint), 'module.')
    backbone = getattr(model, 'backbone', None)
    layout = getattr(backbone, 'official_layout', None)
    if layout is None or not layout[0](state_dict):
        return state_dict, 'OpenMMLab'
    # The classifier only where the model has one (an mmpretrain LinearClsHead: head.fc.*).
    own = model.state_dict()
    converted = to_classifier_keys(layout[1](state_dict), keep_head=own.__contains__)
    return converted, f'official {type(backbone).__name__}'


def check_whole_model(model: nn.Module, state_dict: Mapping, source: str,
                      layout: str = 'OpenMMLab') -> LoadReport:
    """Compare ``state_dict`` with ``model``; raise unless it holds the whole model.

    Returns the report (nothing is loaded). A shape mismatch is tolerated only
    in the model's last classifier layer (another class count).
    """
    own = model.state_dict()
    report = compare_state_dicts(own, state_dict)
    if report.nonfinite:
        raise CheckpointError(
            f'{source} has NaN/inf values in {len(report.nonfinite)} tensors (e.g. '
            f'{_examples(report.nonfinite)}): it was saved after training diverged; use an '
            'earlier checkpoint')
    total = len(own)
    what = f'{type(model).__name__} ({total} tensors)'
    backbone = getattr(model, 'backbone', None)
    backbone_keys = set(backbone.state_dict()) if isinstance(backbone, nn.Module) else set()
    if report.missing and backbone_keys and \
            len(backbone_keys & set(state_dict)) >= 0.5 * len(backbone_keys):
        rest = [k for k in report.missing if not k.startswith('backbone.')]
        raise CheckpointMismatchError(
            f'{source} is a backbone-only checkpoint (its keys are those of the '
            f'{type(backbone).__name__} backbone, without "backbone."), not one of the whole '
            f'{what}: the other {len(rest)} tensors (e.g. {_examples(rest)}) would be '
            'random. Evaluate a checkpoint of the trained model, or train from this one with '
            f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{source}').")

    classifier = _classifier_keys(model)
    bad_shapes = [k for k, _, _ in report.shape_mismatch if k not in classifier]
    if report.missing or bad_shapes:
        parts = [f'{len(report.matched)} of {total} tensors match']
        if report.missing:
            parts.append(f'{len(report.missing)} missing (e.g. {_examples(report.missing)})')
        if bad_shapes:
            parts.append(f'{len(bad_shapes)} of another shape (e.g. '
                         + _examples([f'{k} {a} vs model {b}' for k, a, b in
                                      report.shape_mismatch if k in bad_shapes]) + ')')
        hint = ('an official checkpoint holds only the ImageNet backbone and classifier: '
                "train from it (model.backbone.init_cfg=dict(type='Pretrained', "
                f"checkpoint='{source}')) and evaluate the trained model"
                if layout.startswith('official') else
                'the checkpoint belongs to another model: use the config it was trained '
                'with (check e.g. model.backbone.arch and the heads)')
        raise CheckpointMismatchError(
            f'{source} ({layout} layout) does not hold the weights of the whole {what}: '
            f'{"; ".join(parts)}. The model would run with random weights; {hint}.')
    return report


def _classifier_keys(model: nn.Module) -> set[str]:
    """Keys of the model's final class-score layer(s), whose width is the class count."""
    keys = set()
    for name, module in model.named_modules():
        leaf = name.rsplit('.', 1)[-1]
        if leaf in ('fc', 'conv_seg', 'fc_cls', 'conv_cls') and hasattr(module, 'weight'):
            keys.update(f'{name}.{p}' for p, _ in module.named_parameters(recurse=False))
    return keys


def load_whole_model(model: nn.Module, path: str, map_location: str = 'cpu'
                     ) -> tuple[LoadReport, dict]:
    """Read ``path``, convert an official layout, check and load it into ``model``.

    Returns the report and the raw checkpoint (for its ``meta``).

    Raises:
        CheckpointMismatchError: the file lacks part of the model.
        CheckpointError, FileNotFoundError: unreadable file (see
            :func:`read_checkpoint`).
    """
    checkpoint = read_checkpoint(path, map_location)
    state_dict, layout = whole_model_state_dict(model, checkpoint)
    report = check_whole_model(model, state_dict, path, layout)
    mismatched = {k for k, _, _ in report.shape_mismatch}
    model.load_state_dict({k: v for k, v in state_dict.items()
                           if k not in mismatched and k not in report.unexpected},
                          strict=False)
    return report, checkpoint


def describe_load(report: LoadReport, path: str) -> list[str]:
    """What a tool prints after :func:`load_whole_model`: the count, then each kept layer."""
    lines = [f'{path}: loaded {len(report.matched)} tensors (the whole model)']
    lines += [f'warning: {key} has shape {theirs} in the checkpoint, {ours} in the model '
              '(another class count): that layer keeps its initialisation'
              for key, theirs, ours in report.shape_mismatch]
    return lines
