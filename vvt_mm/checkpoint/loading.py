"""Read checkpoints safely and load them into a model with an honest report.

* Files are read with ``torch.load(weights_only=True)``: a downloaded file cannot
  run code. Checkpoints written by mmengine (mmseg/mmdet/mmpretrain training
  runs) load too, through a minimal allowlist (:mod:`.safe_globals`). A file
  that needs arbitrary unpickling is refused with the way to opt in
  (``allow_unsafe=True`` or ``VVT_MM_ALLOW_UNSAFE_CHECKPOINT=1``) for files the
  user trusts.
* Loading reports what matched, what was missing, unexpected or of another
  shape, and raises when (almost) nothing matched -- the classic silent failure
  of a wrong prefix or a wrong model.
* Damaged files fail loudly: torch does not check its archive's CRCs, so a
  flipped byte would otherwise load as a wrong weight; truncated files, HTML
  error pages saved as ``.pth`` and NaN-filled weights get their own message.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .safe_globals import allow_mmengine_globals

UNSAFE_ENV = 'VVT_MM_ALLOW_UNSAFE_CHECKPOINT'


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot (or should not) be loaded."""


class CorruptCheckpointError(CheckpointError):
    """Truncated, damaged, or not a PyTorch checkpoint at all."""


class UnsafeCheckpointError(CheckpointError):
    """Holds objects that ``weights_only=True`` refuses to unpickle."""


def checkpoint_problem(path: str) -> str | None:
    """Why ``path`` is not a complete PyTorch checkpoint, or ``None`` if it is.

    torch does not check the CRCs of its zip archive: a flipped byte in a
    tensor loads silently as a wrong weight. We read the archive once with
    ``zipfile`` (CRC of every member; a file cut short has no central
    directory). Legacy (pre-1.6, non-zip) files can only be checked for the
    pickle header.
    """
    if not os.path.isfile(path):
        return 'no such file'
    if os.path.getsize(path) == 0:
        return 'the file is empty'
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            return f'damaged zip archive: {err}'
        return f'CRC mismatch in {bad!r}, the file was altered or damaged' if bad else None
    with open(path, 'rb') as f:
        head = f.read(16)
    if head[:2] == b'PK':
        return 'truncated: the zip archive has no central directory (interrupted write?)'
    if head[:1] != b'\x80':
        return f'not a PyTorch checkpoint (it starts with {head!r})'
    return None


def _unsupported_global(err: Exception) -> str | None:
    match = re.search(r'GLOBAL ([\w.]+)', str(err))
    return match.group(1) if match else None


def read_checkpoint(path: str, map_location: str | torch.device = 'cpu',
                    allow_unsafe: bool | None = None, verify: bool = True) -> dict:
    """Load a checkpoint file (or http(s) URL) without executing pickled code.

    Args:
        path: local file or http(s) URL.
        map_location: as in ``torch.load``.
        allow_unsafe: unpickle arbitrary objects (only for files you trust);
            defaults to ``VVT_MM_ALLOW_UNSAFE_CHECKPOINT=1`` in the environment.
        verify: check the archive's CRCs first (:func:`checkpoint_problem`),
            so a damaged file fails instead of loading wrong weights.

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCheckpointError: truncated, damaged or not a checkpoint.
        UnsafeCheckpointError: needs unpickling beyond tensors (names the
            object and the opt-in).
    """
    if allow_unsafe is None:
        allow_unsafe = os.environ.get(UNSAFE_ENV, '') == '1'
    if path.startswith(('http://', 'https://')):
        with allow_mmengine_globals():
            return torch.hub.load_state_dict_from_url(path, map_location=map_location,
                                                      weights_only=not allow_unsafe)
    if os.path.isdir(path):
        raise IsADirectoryError(f'checkpoint {path!r} is a folder; point to the .pth file '
                                'inside it')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist; check the path in '
                                "init_cfg=dict(type='Pretrained', checkpoint=...)")
    problem = checkpoint_problem(path) if verify else None
    if problem:
        raise CorruptCheckpointError(
            f'checkpoint {path!r} is corrupted or truncated ({problem}); re-download or '
            're-save it')
    try:
        # Checkpoints saved by mmengine (any mmseg/mmdet/mmpretrain training run)
        # need a few numpy/HistoryBuffer globals: see safe_globals.py.
        with allow_mmengine_globals():
            return torch.load(path, map_location=map_location,
                              weights_only=not allow_unsafe)
    except pickle.UnpicklingError as err:
        if allow_unsafe:
            raise CorruptCheckpointError(
                f'checkpoint {path!r} could not be unpickled ({err}); re-download or '
                're-save it') from err
        name = _unsupported_global(err)
        what = f'an object of {name}' if name else 'objects beyond tensors and containers'
        raise UnsafeCheckpointError(
            f'checkpoint {path!r} holds {what}, so it was not loaded (weights_only=True '
            f'keeps a downloaded file from running code). If you trust the file, set '
            f'{UNSAFE_ENV}=1 or pass allow_unsafe=True; better, re-save just its '
            'state_dict.') from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CorruptCheckpointError(
            f'checkpoint {path!r} is corrupted or truncated ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else "no detail"}); re-download or '
            're-save it') from err


def extract_state_dict(checkpoint: Mapping) -> Mapping:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` containers."""
    for key in ('state_dict', 'model', 'module'):
        inner = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping):
            return inner
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'a checkpoint must be a dict of tensors, got '
                        f'{type(checkpoint).__name__}')
    return checkpoint


@dataclass
class LoadReport:
    """What happened when a state dict met a model."""
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)

    @property
    def match_ratio(self) -> float:
        total = len(self.matched) + len(self.missing) + len(self.shape_mismatch)
        return len(self.matched) / total if total else 1.0

    def summary(self, limit: int = 5) -> str:
        def head(items):
            items = [str(i) for i in items]
            more = f' ... (+{len(items) - limit})' if len(items) > limit else ''
            return ', '.join(items[:limit]) + more

        lines = [f'loaded {len(self.matched)} tensors ({self.match_ratio:.0%} of the model)']
        if self.missing:
            lines.append(f'missing in checkpoint ({len(self.missing)}): {head(self.missing)}')
        if self.unexpected:
            lines.append(f'unused from checkpoint ({len(self.unexpected)}): '
                         f'{head(self.unexpected)}')
        if self.nonfinite:
            lines.append(f'NaN/inf values ({len(self.nonfinite)}): {head(self.nonfinite)}')
        if self.shape_mismatch:
            lines.append(f'shape mismatch, skipped ({len(self.shape_mismatch)}): '
                         + head(f'{k} {tuple(a)} vs model {tuple(b)}'
                                for k, a, b in self.shape_mismatch))
        return '\n'.join(lines)


def compare_state_dicts(own: Mapping, theirs: Mapping) -> LoadReport:
    """What of ``theirs`` fits ``own`` (a model's state dict), nothing loaded.

    Matched tensors with NaN/inf values are listed in ``nonfinite`` too.
    """
    report = LoadReport()
    for key, value in theirs.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            report.matched.append(key)
            if torch.is_floating_point(value) and not torch.isfinite(value).all():
                report.nonfinite.append(key)
    report.missing = [key for key in own if key not in theirs]
    return report


def load_state_dict_with_report(module: nn.Module, state_dict: Mapping) -> LoadReport:
    """``load_state_dict(strict=False)`` that skips, and reports, shape mismatches."""
    report = compare_state_dicts(module.state_dict(), state_dict)
    module.load_state_dict(OrderedDict((k, state_dict[k]) for k in report.matched),
                           strict=False)
    return report


def load_pretrained(module: nn.Module,
                    checkpoint: str | Mapping,
                    prefix: str | None = None,
                    converter: Callable[[Mapping], Mapping | None] | None = None,
                    map_location: str | torch.device = 'cpu',
                    min_match_ratio: float = 0.5,
                    allow_unsafe: bool | None = None) -> LoadReport:
    """Load pretrained weights into ``module`` and log what matched.

    Args:
        module: the model (typically a backbone).
        checkpoint: a path/URL or an already loaded dict.
        prefix: keep only keys under this prefix and strip it (e.g.
            ``'backbone.'`` for a full detector/segmentor checkpoint).
        converter: maps a foreign layout onto the module's; returns ``None``
            when the layout is not its own. Defaults to the module's
            ``convert_official`` attribute when present.
        min_match_ratio: raise if fewer of the module's tensors were loaded.
        allow_unsafe: see :func:`read_checkpoint`.
    """
    source = checkpoint if isinstance(checkpoint, str) else '<state dict>'
    if isinstance(checkpoint, str):
        checkpoint = read_checkpoint(checkpoint, map_location, allow_unsafe)
    state_dict = extract_state_dict(checkpoint)
    if prefix:
        if not prefix.endswith('.'):
            prefix += '.'
        stripped = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not stripped:
            raise ValueError(f'no key of {source} starts with prefix {prefix!r}; its keys '
                             f'look like {list(state_dict)[:3]}')
        state_dict = stripped
    converter = converter or getattr(module, 'convert_official', None)
    if converter is not None:
        converted = converter(state_dict)
        if converted is not None:
            print_log(f'{source}: official layout detected, converted on load',
                      logger='current')
            state_dict = converted
    report = load_state_dict_with_report(module, state_dict)
    print_log(f'{type(module).__name__} <- {source}: {report.summary()}', logger='current')
    if report.nonfinite:
        # A checkpoint saved after a diverged step: every output would be NaN.
        raise RuntimeError(
            f'{source} has NaN/inf values in {len(report.nonfinite)} tensors (e.g. '
            f'{report.nonfinite[:3]}); it was saved after training diverged. Use an '
            'earlier checkpoint.')
    if report.match_ratio < min_match_ratio:
        raise RuntimeError(
            f'{source} matched only {len(report.matched)} of '
            f'{len(report.matched) + len(report.missing) + len(report.shape_mismatch)} '
            f'tensors of {type(module).__name__}; wrong model or wrong prefix? Checkpoint '
            f'keys look like {list(state_dict)[:3]}, model keys like '
            f'{list(module.state_dict())[:3]}. Set init_cfg prefix (e.g. '
            "prefix='backbone.') or pick the matching checkpoint.")
    return report
