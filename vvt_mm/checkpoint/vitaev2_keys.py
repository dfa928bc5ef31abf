"""Official ViTAEv2-VSA state-dict layout -> vvt_mm layout (single source of truth).

The official code (classification and detection copies share the key names)
stores ``layers.{i}.RC.*`` (reduction cell) and ``layers.{i}.NC.{j}.*``
(normal cells) with ``PRM``/``PCM``/``pos``/``mlp`` sub-modules; ours names
them ``stages.{i}.reduction`` / ``stages.{i}.blocks.{j}`` with ``prm``/``pcm``/
``cpe``/``ffn``. Attention tensors keep their official names.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

_CELL_RULES = [
    (r'^layers\.(\d+)\.RC\.', 'stages.{0}.reduction.'),
    (r'^layers\.(\d+)\.NC\.(\d+)\.', 'stages.{0}.blocks.{1}.'),
]
# Applied to the rest of the key, after the cell prefix; first match wins.
_INNER_RULES = [
    (r'^PRM\.convs\.(\d+)\.0\.', 'prm.convs.{0}.'),
    (r'^PCM\.', 'pcm.'),
    (r'^pos\.', 'cpe.'),
    (r'^mlp\.', 'ffn.'),
    (r'^(norm1|norm2|attn)\.', '{0}.'),
]
# Buffers the official model saves although they follow from the window size.
_DERIVED = re.compile(r'(^|\.)attn\.relative_position_index$')
_OFFICIAL = re.compile(r'^(module\.)?layers\.\d+\.(RC|NC\.\d+)\.')


def is_official_vitaev2_vsa(state_dict: Mapping) -> bool:
    """True when keys follow the official ``layers.{i}.RC`` / ``layers.{i}.NC.{j}`` layout."""
    return any(_OFFICIAL.match(key) for key in state_dict)


def convert_vitaev2_vsa(state_dict: Mapping) -> OrderedDict:
    """Rename an official ViTAEv2-VSA state dict to our backbone keys.

    A DDP ``module.`` prefix is stripped; the saved ``relative_position_index``
    buffers are dropped (ours are rebuilt from the window size); the
    classifier ``head.*`` becomes ``head.fc.*`` (mmpretrain's
    ``LinearClsHead``) and a backbone loader ignores it. Unknown keys raise,
    so a silent partial conversion is impossible.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        name = key[len('module.'):] if key.startswith('module.') else key
        if _DERIVED.search(name):
            continue
        if name.startswith('head.'):
            converted['head.fc.' + name[len('head.'):]] = value
            continue
        for pattern, template in _CELL_RULES:
            match = re.match(pattern, name)
            if match:
                prefix, rest = template.format(*match.groups()), name[match.end():]
                break
        else:
            raise KeyError(f'unexpected key {key!r} in an official ViTAEv2-VSA checkpoint; '
                           'is this really a ViTAEv2-VSA state dict?')
        for pattern, template in _INNER_RULES:
            match = re.match(pattern, rest)
            if match:
                converted[prefix + template.format(*match.groups()) + rest[match.end():]] = value
                break
        else:
            raise KeyError(f'unexpected key {key!r} in an official ViTAEv2-VSA checkpoint '
                           f'(unknown part {rest!r})')
    return converted
