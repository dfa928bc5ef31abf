"""Build a token mixer from a config, with an error that names the choices.

mmengine's ``Registry.build`` answers an unknown ``type`` with a ``KeyError``
that points at its docs but never says which names *are* registered; for an
ablation switch the list of valid names is the useful part.
"""
from __future__ import annotations

import copy
import inspect

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


def _short_name(aliases: list[str]) -> str:
    return sorted(aliases, key=lambda n: (n[:1].isupper(), n))[0]


def attention_class(cfg: dict) -> type:
    """The token mixer class ``cfg`` names, checked before anything is built.

    Raises:
        TypeError: ``cfg`` is not a dict with a ``type``; a bare name such as
            ``'softmax'`` is answered with the dict to write instead.
        ValueError: ``cfg['type']`` names no registered token mixer; the
            message lists every valid name.
    """
    if isinstance(cfg, str):
        fix = (f'attn_cfg=dict(type={cfg!r})' if cfg in ATTENTIONS.module_dict else
               f'attn_cfg=dict(type=NAME) with NAME one of {_describe_choices()}')
        raise TypeError(f'attn_cfg must be a dict, got the string {cfg!r}; write {fix}')
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"attn_cfg must be a dict with a 'type' key, got {cfg!r}; valid "
                        f'types: {_describe_choices()}')
    attn_type = cfg['type']
    # Looked up in our own registry directly: ``Registry.build`` would first
    # search the caller's default scope (mmseg/mmpretrain/...) and warn.
    cls = attn_type if isinstance(attn_type, type) else ATTENTIONS.module_dict.get(attn_type)
    if cls is None:
        raise ValueError(f'unknown attention type {attn_type!r}; valid types: '
                         f'{_describe_choices()}')
    return cls


def mixer_options(cls: type) -> list[str] | None:
    """Constructor arguments of the token mixer ``cls``; ``None`` if it takes any."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not p.VAR_POSITIONAL]


def takes_option(cls: type, option: str) -> bool:
    """Whether the token mixer ``cls`` accepts the constructor argument ``option``."""
    options = mixer_options(cls)
    return options is None or option in options


def mixers_taking(option: str) -> list[str]:
    """Short names of the registered token mixers that accept ``option``.

    The interchangeable mixers of :mod:`vvt_mm.models.attention` come first,
    then those written for one backbone (LVT's, ViTAEv2's), each group by name.
    """
    def order(name: str) -> tuple[bool, str]:
        module = ATTENTIONS.module_dict[name].__module__
        return not module.startswith(__name__.rpartition('.')[0]), name

    return sorted((_short_name(aliases) for aliases in attention_names().values()
                   if takes_option(ATTENTIONS.module_dict[aliases[0]], option)), key=order)


def takes_extra_tokens(mixer: nn.Module) -> bool:
    """Whether ``mixer`` mixes tokens beyond its ``H x W`` grid (e.g. a class token).

    Mixers that use the token positions (vicinity, linformer, a key/value
    reduction, windows, convolutions) need exactly the ``H * W`` grid tokens;
    those that only see a set of tokens (softmax, performer, ...) say
    ``takes_extra_tokens = True``. A mixer that does not say is taken to need
    the grid.
    """
    return bool(getattr(mixer, 'takes_extra_tokens', False))


def build_attention(cfg: dict, optional: dict | None = None, **default_args) -> nn.Module:
    """``ATTENTIONS.build(cfg, default_args)`` with errors that name the fix.

    Every token mixer is called as ``mixer(tokens, hw_shape)`` on ``(B, N, C)``
    tokens laid out row-major on ``hw_shape`` and returns ``(B, N, C)``; it is
    built from ``embed_dims`` and ``num_heads`` (what every mixer shares) plus
    its own options from ``cfg``. ``optional`` holds defaults a block offers
    (e.g. a stage's ``sr_ratio``): each goes to the mixer only if it takes it,
    and ``cfg`` wins over it.

    A mixer given an option it lacks would fail with Python's bare
    ``unexpected keyword argument``; we name the mixer, the option and the
    mixers that do take it.

    Raises:
        TypeError: ``cfg`` is not a dict with a ``type``.
        ValueError: ``cfg['type']`` names no registered token mixer (the
            message lists every valid name), or an option the mixer does not take.
    """
    cls = attention_class(cfg)
    args = copy.deepcopy(dict(cfg))
    attn_type = args.pop('type')
    for key, value in default_args.items():
        args.setdefault(key, value)
    for key, value in (optional or {}).items():
        if takes_option(cls, key):
            args.setdefault(key, value)
    name = attn_type if isinstance(attn_type, str) else cls.__name__
    for key in args:
        if not takes_option(cls, key):
            takers = mixers_taking(key)
            raise ValueError(
                f'attention type {name!r} ({cls.__name__}) does not take {key}; '
                + (f'mixers that do: {", ".join(map(repr, takers))}' if takers
                   else 'no registered mixer does')
                + f'; its options are {", ".join(mixer_options(cls))}')
    return cls(**args)
