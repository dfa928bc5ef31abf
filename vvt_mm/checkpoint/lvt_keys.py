"""Official LVT state-dict layout -> vvt_mm layout (single source of truth).

Official keys (github Chenglin-Yang/LVT, ``lite_vision_transformer``):
``backbone.{s}.0.{proj,norm}.*`` (patch embedding), ``backbone.{s}.1.{b}.*``
(blocks: ``norm1``, ``attn``, ``norm2``, ``mlp``), then either ``norm.*`` +
``head.*`` (classification) or ``downstream_norms.{s}.*`` (dense prediction).
The released ImageNet model is ``lvt_cls``: the same backbone plus a VOLO-style
classifier (``cls_token``, two class-attention ``post_network`` blocks,
``aux_head`` for token labelling) before ``norm`` and ``head``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

from torch import Tensor

_BLOCK_RULES = [
    # (official suffix pattern, our suffix)
    (r'attn\.attn\.', 'attn.attn_logits.'),
    (r'attn\.(q|kv|proj|sr|norm)\.', None),
    (r'attn\.ds\.(weight|bias)$', None),
    (r'mlp\.depconv\.', 'ffn.dwconv.'),
    (r'mlp\.(fc1|fc2)\.', None),
    (r'(norm1|norm2)\.', None),
]


def is_official_lvt(state_dict: Mapping) -> bool:
    """True when keys follow the official ``backbone.{s}.{0,1}`` layout."""
    return any(re.match(r'^backbone\.\d+\.[01]\.', key) for key in state_dict)


def _convert_block_key(rest: str, value: Tensor, key: str) -> tuple[str, Tensor]:
    if rest == 'attn.weight.weight':
        # grouped 1x1 conv (9C, C, 1, 1), group p = window position -> (9, C, C)
        channels = value.shape[1]
        return 'attn.value_weight', value.reshape(-1, channels, channels)
    for pattern, ours in _BLOCK_RULES:
        match = re.match(pattern, rest)
        if not match:
            continue
        if ours is None:
            new = rest.replace('mlp.', 'ffn.', 1)
        else:
            new = ours + rest[match.end():]
        if rest.startswith('mlp.fc') and rest.endswith('weight') and value.dim() == 4:
            value = value.flatten(1)  # 1x1 conv -> Linear (our ConvFFN)
        return new, value
    raise KeyError(f'unexpected block key {key!r} in an official LVT checkpoint')


def convert_lvt(state_dict: Mapping) -> OrderedDict:
    """Rename (and reshape where needed) an official LVT state dict to :class:`LVT` keys.

    * ``backbone.{s}.0.*`` -> ``stages.{s}.patch_embed.*``;
      ``backbone.{s}.1.{b}.*`` -> ``stages.{s}.blocks.{b}.*`` with ``mlp`` ->
      ``ffn``, ``mlp.depconv`` -> ``ffn.dwconv`` and the 1x1-conv FFN weights of
      stages 2-4 flattened to Linear weights.
    * CSA: ``attn.attn`` -> ``attn.attn_logits``; the grouped 1x1 conv
      ``attn.weight.weight`` ``(9C, C, 1, 1)`` -> ``attn.value_weight`` ``(9, C, C)``.
    * ``downstream_norms.{s}`` -> ``norm{s}``; the classifier's final ``norm``
      (a LayerNorm on the last stage's tokens) -> ``norm{last}``; ``head`` ->
      ``head.fc``; the ``lvt_cls`` classifier (``cls_token``, ``post_network``,
      ``aux_head``) -> under ``head.``, which a backbone loader drops (we do not
      port that classifier; see ``configs/lvt_in1k.py``).

    Unknown keys raise, so a silent partial conversion is impossible.
    """
    stage_ids = [int(m.group(1)) for k in state_dict
                 if (m := re.match(r'^backbone\.(\d+)\.', k))]
    last = max(stage_ids) if stage_ids else 3
    converted = OrderedDict()
    for key, value in state_dict.items():
        if match := re.match(r'^backbone\.(\d+)\.0\.(proj|norm)\.', key):
            new = f'stages.{match.group(1)}.patch_embed.{match.group(2)}.' + key[match.end():]
        elif match := re.match(r'^backbone\.(\d+)\.1\.(\d+)\.', key):
            rest, value = _convert_block_key(key[match.end():], value, key)
            new = f'stages.{match.group(1)}.blocks.{match.group(2)}.{rest}'
        elif match := re.match(r'^downstream_norms\.(\d+)\.', key):
            new = f'norm{match.group(1)}.' + key[match.end():]
        elif key.startswith('norm.'):
            new = f'norm{last}.' + key[len('norm.'):]
        elif key.startswith('head.'):
            new = 'head.fc.' + key[len('head.'):]
        elif key.startswith(('post_network.', 'aux_head.')) or key == 'cls_token':
            new = 'head.' + key  # the VOLO-style classifier of `lvt_cls`
        else:
            raise KeyError(f'unexpected key {key!r} in an official LVT checkpoint; is this '
                           'really an LVT state dict?')
        converted[new] = value
    return converted
