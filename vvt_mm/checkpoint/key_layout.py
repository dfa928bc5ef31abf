"""Key layouts of one set of weights: bare backbone, ``backbone.*``, classifier ``head.*``.

Our converters return backbone keys plus the official classifier as
``head.*`` (mmpretrain's ``LinearClsHead`` holds it as ``head.fc.*``). An
``ImageClassifier`` wants the backbone under ``backbone.``; a backbone wants
the bare keys. The tools, the whole-model loader and the classifier filter
all go through these two functions.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

__all__ = ['strip_prefix', 'to_classifier_keys']


def strip_prefix(state_dict: Mapping, prefix: str, only: bool = False) -> OrderedDict:
    """Keys without a leading ``prefix``; with ``only``, just the keys that had it."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                       for k, v in state_dict.items() if not only or k.startswith(prefix))


def to_classifier_keys(state_dict: Mapping,
                       keep_head: Callable[[str], bool] | None = None) -> OrderedDict:
    """Backbone keys + ``head.*`` -> an ``ImageClassifier``'s ``backbone.*`` + ``head.*``.

    ``keep_head(key)`` decides which ``head.*`` keys stay (default: all),
    e.g. only those the model has.
    """
    result = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.'):
            if keep_head is None or keep_head(key):
                result[key] = value
        else:
            result[f'backbone.{key}'] = value
    return result
