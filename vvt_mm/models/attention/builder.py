"""Build a token mixer from a config, with an error that names the choices.

mmengine's ``Registry.build`` answers an unknown ``type`` with a ``KeyError``
that points at its docs but never says which names *are* registered; for an
ablation switch the list of valid names is the useful part.
"""
from __future__ import annotations

import copy

from torch import nn

from vvt_mm.registry import ATTENTIONS


def attention_names() -> dict[str, list[str]]:
    """Registered token mixers: class name -> every name it answers to."""
    names: dict[str, list[str]] = {}
    for name, cls in ATTENTIONS.module_dict.items():
        names.setdefault(cls.__name__, []).append(name)
    return names


def _describe_choices() -> str:
    return ', '.join(
        ' / '.join(repr(n) for n in sorted(aliases, key=lambda n: (n[:1].isupper(), n)))
        for _, aliases in sorted(attention_names().items()))


def build_attention(cfg: dict, **default_args) -> nn.Module:
    """``ATTENTIONS.build(cfg, default_args)`` with a helpful unknown-type error.

    Raises:
        ValueError: ``cfg['type']`` names no registered token mixer; the
            message lists every valid name.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"attn_cfg must be a dict with a 'type' key, got {cfg!r}; valid "
                        f'types: {_describe_choices()}')
    args = copy.deepcopy(dict(cfg))
    attn_type = args.pop('type')
    # Looked up in our own registry directly: ``Registry.build`` would first
    # search the caller's default scope (mmseg/mmpretrain/...) and warn.
    cls = attn_type if isinstance(attn_type, type) else ATTENTIONS.module_dict.get(attn_type)
    if cls is None:
        raise ValueError(f'unknown attention type {attn_type!r}; valid types: '
                         f'{_describe_choices()}')
    for key, value in default_args.items():
        args.setdefault(key, value)
    return cls(**args)
