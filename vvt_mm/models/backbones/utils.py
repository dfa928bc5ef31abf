"""Argument checks shared by every backbone, so bad input fails the same way."""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def resolve_arch(arch: str | dict, arch_zoo: dict, essential_keys: set[str],
                 owner: str) -> dict:
    """Look ``arch`` up in ``arch_zoo`` or validate a custom dict."""
    if isinstance(arch, str):
        key = arch.lower()
        if key not in arch_zoo:
            raise ValueError(f'{owner}: unknown arch {arch!r}; choose one of '
                             f'{sorted(arch_zoo)} or pass a dict with keys '
                             f'{sorted(essential_keys)}')
        return copy.deepcopy(arch_zoo[key])
    if isinstance(arch, dict):
        missing = essential_keys - set(arch)
        if missing:
            raise ValueError(f'{owner}: custom arch dict lacks {sorted(missing)}; it needs '
                             f'{sorted(essential_keys)}')
        return copy.deepcopy(dict(arch))
    raise TypeError(f'{owner}: arch must be a name or a dict, got {type(arch).__name__}')


def normalize_out_indices(out_indices: int | Sequence[int], num_stages: int,
                          owner: str) -> tuple[int, ...]:
    """Validate stage indices (negative ones count from the end)."""
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    result = []
    for index in out_indices:
        if not -num_stages <= index < num_stages:
            raise ValueError(f'{owner}: out_indices {list(out_indices)} has {index}, out of '
                             f'range for {num_stages} stages; use values in '
                             f'0..{num_stages - 1}')
        result.append(index % num_stages)
    return tuple(result)


def check_per_stage(arch: dict, keys: Iterable[str], owner: str,
                    num_stages: int | None = None) -> int:
    """Check that every per-stage list of ``arch`` has one entry per stage.

    The stage count is ``num_stages`` when the backbone fixes it, else the
    length of ``arch['depths']``. A short list would otherwise surface as an
    ``IndexError`` in the middle of building the stages.

    Returns:
        The number of stages.
    """
    keys = sorted(keys)
    for key in keys:
        value = arch[key]
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f'{owner}: arch {key} must be a list with one value per stage, '
                            f'got {value!r}')
    fixed = num_stages is not None
    if not fixed:
        num_stages = len(arch['depths'])
    wrong = [key for key in keys if len(arch[key]) != num_stages]
    if wrong:
        lengths = ', '.join(f'{key} has {len(arch[key])} entries' for key in wrong)
        if fixed:
            raise ValueError(f'{owner} has {num_stages} stages but arch {lengths}; each of '
                             f'{", ".join(keys)} needs {num_stages} entries (one per stage)')
        raise ValueError(f'{owner}: arch {lengths}, depths has {num_stages}; give each of '
                         f'{", ".join(keys)} one value per stage')
    return num_stages


_DTYPE_METHOD = {torch.float32: 'float', torch.float64: 'double', torch.float16: 'half',
                 torch.bfloat16: 'bfloat16'}


def _cast(dtype: torch.dtype) -> str:
    method = _DTYPE_METHOD.get(dtype)
    return f'{method}()' if method else f'to({dtype})'


def check_image_input(x: Tensor, in_channels: int, min_size: int, owner: str,
                      weight_dtype: torch.dtype | None = None) -> None:
    """Fail early, with the fix, on inputs a backbone cannot process.

    ``weight_dtype`` (the parameters' dtype) must match the input's unless
    autocast is on, which casts per op; otherwise torch's first convolution
    fails with a message that names neither the model nor the fix.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f'{owner} expects a torch.Tensor image batch, got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError(f'{owner} expects an NCHW batch (4 dims), got shape '
                         f'{tuple(x.shape)}; add a batch dimension with x[None]')
    if x.shape[0] == 0:
        raise ValueError(f'{owner} got an empty batch (shape {tuple(x.shape)}); pass at '
                         'least one image, or skip the call when there is none')
    if not torch.is_floating_point(x):
        raise TypeError(f'{owner} expects a floating-point image, got {x.dtype}; convert '
                        'with x.float() (and normalise it, e.g. with a data preprocessor)')
    if (weight_dtype is not None and x.dtype != weight_dtype
            and not torch.is_autocast_enabled(x.device.type)):
        raise TypeError(f'{owner} has {weight_dtype} weights but got a {x.dtype} image '
                        f'batch; convert the input with x.{_cast(weight_dtype)} or the '
                        f'model with model.{_cast(x.dtype)}, or run under torch.autocast')
    if x.shape[1] != in_channels:
        raise ValueError(f'{owner} was built for {in_channels}-channel input but got '
                         f'{x.shape[1]} channels (shape {tuple(x.shape)}); pass '
                         f'in_channels={x.shape[1]} or convert the images')
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f'{owner} needs images of at least {min_size}x{min_size} (its '
                         f'total stride), got {x.shape[2]}x{x.shape[3]}; resize or pad '
                         'the input')


def check_frozen_stages(frozen_stages: int, num_stages: int, owner: str) -> int:
    """``frozen_stages`` in ``[-1, num_stages]`` (``-1``: none frozen)."""
    if not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'{owner}: frozen_stages must be in [-1, {num_stages}], '
                         f'got {frozen_stages}')
    return frozen_stages


def check_out_type(out_type: str, owner: str, choices: Sequence[str] = ('featmap', 'cls_token')
                   ) -> str:
    """``out_type`` one of ``choices``."""
    if out_type not in choices:
        raise ValueError(f'{owner}: out_type must be '
                         + ' or '.join(repr(c) for c in choices) + f', got {out_type!r}')
    return out_type


def resolve_pretrained(pretrained: str | None, init_cfg: dict | list | None):
    """Map the deprecated ``pretrained=`` argument onto ``init_cfg``."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError('init_cfg and pretrained cannot be set at the same time; use '
                         "init_cfg=dict(type='Pretrained', checkpoint=...)")
    if not isinstance(pretrained, str):
        raise TypeError(f'pretrained must be a checkpoint path (str) or None, got '
                        f'{type(pretrained).__name__}')
    warnings.warn('pretrained= is deprecated, please use '
                  "init_cfg=dict(type='Pretrained', checkpoint=...)", DeprecationWarning,
                  stacklevel=4)
    return dict(type='Pretrained', checkpoint=pretrained)
