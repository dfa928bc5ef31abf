"""Official LocalViT state-dict layouts -> vvt_mm layouts (single source of truth).

Two official layouts (github ofsoundof/LocalViT):

* DeiT-based ``LocalVisionTransformer`` (timm ViT keys): ``cls_token``,
  ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.norm1.*``,
  ``blocks.{i}.attn.{qkv,proj}.*``, ``blocks.{i}.conv.conv.{k}.*``, ``norm.*``,
  ``head.*``.
* ``LocalViT_PVT`` (PVTv1 keys): ``patch_embed{s}.{proj,norm}.*``,
  ``pos_embed{s}``, ``block{s}.{j}.norm1.*``, ``block{s}.{j}.attn.{q,kv,proj,sr,norm}.*``,
  ``block{s}.{j}.conv.conv.{k}.*``, ``cls_token``, ``norm.*``, ``head.*``.

The locality FFN is an ``nn.Sequential`` there: ``0`` conv, ``1`` BN, ``2`` act,
``3`` depthwise conv, ``4`` BN, ``5`` act, then ``6`` SE (``fc.0``, ``fc.2``) or
ECA (``conv``) when present, then the projecting conv and BN (``7``, ``8``, or
``6``, ``7`` without SE/ECA).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

_FFN_FIXED = {'0': 'expand.conv', '1': 'expand.bn', '3': 'dwconv.conv', '4': 'dwconv.bn'}
_FFN_ATTN = {'fc.0': 'channel_attn.fc1', 'fc.2': 'channel_attn.fc2',
             'conv': 'channel_attn.conv'}


def _ffn_has_channel_attn(state_dict: Mapping, block_prefix: str) -> bool:
    return any(k.startswith(f'{block_prefix}conv.conv.6.') and
               re.match(r'(fc\.[02]|conv)\.', k[len(f'{block_prefix}conv.conv.6.'):])
               for k in state_dict)


def _convert_ffn_key(rest: str, has_attn: bool, key: str) -> str:
    """``conv.conv.{k}.<param>`` (``rest`` without that prefix) -> our FFN key."""
    index, _, tail = rest.partition('.')
    if index in _FFN_FIXED:
        return f'{_FFN_FIXED[index]}.{tail}'
    project = {'7': 'project.conv', '8': 'project.bn'} if has_attn else \
        {'6': 'project.conv', '7': 'project.bn'}
    if index in project:
        return f'{project[index]}.{tail}'
    if has_attn and index == '6':
        for official, ours in _FFN_ATTN.items():
            if tail.startswith(official + '.'):
                return ours + tail[len(official):]
    raise KeyError(f'unexpected locality-FFN key {key!r} in an official LocalViT checkpoint')


def is_official_localvit(state_dict: Mapping) -> bool:
    """True for the DeiT-based official layout (``blocks.{i}.conv.conv.*``)."""
    return any(re.match(r'^blocks\.\d+\.conv\.conv\.', key) for key in state_dict)


def convert_localvit(state_dict: Mapping) -> OrderedDict:
    """Rename an official DeiT-based LocalViT state dict to :class:`LocalViT` keys.

    ``blocks.{i}.conv.conv.*`` becomes ``blocks.{i}.ffn.*`` and ``head.*``
    becomes ``head.fc.*`` (mmpretrain ``LinearClsHead``; a backbone loader
    drops it). Everything else keeps its name. Unknown keys raise.
    """
    converted = OrderedDict()
    attn_cache: dict[str, bool] = {}
    for key, value in state_dict.items():
        match = re.match(r'^(blocks\.\d+\.)conv\.conv\.', key)
        if match:
            prefix = match.group(1)
            if prefix not in attn_cache:
                attn_cache[prefix] = _ffn_has_channel_attn(state_dict, prefix)
            new = prefix + 'ffn.' + _convert_ffn_key(key[match.end():], attn_cache[prefix], key)
        elif re.match(r'^blocks\.\d+\.(norm1|attn\.(qkv|proj))\.', key) or key in (
                'cls_token', 'pos_embed') or key.startswith(('patch_embed.proj.', 'norm.')):
            new = key
        elif key.startswith('head.'):
            new = 'head.fc.' + key[len('head.'):]
        else:
            raise KeyError(f'unexpected key {key!r} in an official LocalViT checkpoint; is '
                           'this really a DeiT-based LocalViT state dict?')
        converted[new] = value
    return converted


def is_official_localvit_pvt(state_dict: Mapping) -> bool:
    """True for the official LocalViT-PVT layout (``block{s}.{j}``, ``patch_embed{s}``)."""
    return any(re.match(r'^(block|patch_embed|pos_embed)[1-4]', key) for key in state_dict)


def convert_localvit_pvt(state_dict: Mapping) -> OrderedDict:
    """Rename an official LocalViT-PVT state dict to :class:`LocalViTPVT` keys.

    Stages go from 1-based suffixes to ``stages.{s-1}``; the locality FFN
    ``conv.conv.*`` becomes ``ffn.*``; ``head.*`` becomes ``head.fc.*``.
    Unknown keys raise.
    """
    converted = OrderedDict()
    attn_cache: dict[str, bool] = {}
    for key, value in state_dict.items():
        if match := re.match(r'^patch_embed([1-4])\.(proj|norm)\.', key):
            new = f'stages.{int(match.group(1)) - 1}.patch_embed.{match.group(2)}.' + \
                key[match.end():]
        elif match := re.match(r'^pos_embed([1-4])$', key):
            new = f'stages.{int(match.group(1)) - 1}.pos_embed'
        elif match := re.match(r'^(block([1-4])\.(\d+)\.)conv\.conv\.', key):
            prefix = match.group(1)
            if prefix not in attn_cache:
                attn_cache[prefix] = _ffn_has_channel_attn(state_dict, prefix)
            new = (f'stages.{int(match.group(2)) - 1}.blocks.{match.group(3)}.ffn.' +
                   _convert_ffn_key(key[match.end():], attn_cache[prefix], key))
        elif match := re.match(r'^block([1-4])\.(\d+)\.(norm1|attn\.(q|kv|proj|sr|norm))\.',
                               key):
            new = f'stages.{int(match.group(1)) - 1}.blocks.{match.group(2)}.' + \
                key[len(f'block{match.group(1)}.{match.group(2)}.'):]
        elif key == 'cls_token' or key.startswith('norm.'):
            new = key
        elif key.startswith('head.'):
            new = 'head.fc.' + key[len('head.'):]
        else:
            raise KeyError(f'unexpected key {key!r} in an official LocalViT-PVT checkpoint; '
                           'is this really a LocalViT-PVT state dict?')
        converted[new] = value
    return converted
