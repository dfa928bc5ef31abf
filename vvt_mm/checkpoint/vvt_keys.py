"""Official VVT state-dict layout -> vvt_mm layout (single source of truth)."""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

# (official pattern, our replacement); applied in order, first match wins.
_VVT_KEY_RULES = [
    (r'^patch_embed(\d)\.(proj|norm)\.', 'stages.{0}.patch_embed.{1}.'),
    (r'^block(\d)\.(\d+)\.attn\.se_fc\.(\d)\.', 'stages.{0}.blocks.{1}.attn.fpc_gate.{2}.'),
    (r'^block(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.', 'stages.{0}.blocks.{1}.ffn.dwconv.'),
    (r'^block(\d)\.(\d+)\.mlp\.', 'stages.{0}.blocks.{1}.ffn.'),
    (r'^block(\d)\.(\d+)\.', 'stages.{0}.blocks.{1}.'),
    (r'^norm(\d)\.', 'stages.{0}.norm.'),
    (r'^head\.', 'head.fc.'),
]


def is_official_vvt(state_dict: Mapping) -> bool:
    """True when keys follow the official ``block{i}.{j}``/``patch_embed{i}`` layout."""
    return any(re.match(r'^(block|patch_embed)[1-4]\.', key) for key in state_dict)


def convert_vvt(state_dict: Mapping) -> OrderedDict:
    """Rename an official VVT state dict to our backbone keys.

    Stage numbers go from 1-based to 0-based; ``attn.se_fc`` becomes
    ``attn.fpc_gate`` and ``mlp`` becomes ``ffn``. The classifier ``head.*``
    becomes ``head.fc.*`` (mmpretrain's ``LinearClsHead``); a backbone loader
    ignores it. Unknown keys raise, so a silent partial conversion is
    impossible.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        for pattern, template in _VVT_KEY_RULES:
            match = re.match(pattern, key)
            if match:
                groups = list(match.groups())
                if template.startswith('stages.'):
                    groups[0] = str(int(groups[0]) - 1)
                converted[template.format(*groups) + key[match.end():]] = value
                break
        else:
            raise KeyError(f'unexpected key {key!r} in an official VVT checkpoint; is this '
                           'really a VVT state dict?')
    return converted
