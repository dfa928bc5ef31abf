"""Resume mmengine training on torch >= 2.6 without giving up ``weights_only=True``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``; mmengine 0.10
calls it without the argument, and its own checkpoints hold more than tensors
(the message hub's ``HistoryBuffer`` of numpy arrays, numpy scalars), so
``--resume`` fails with "Weights only load failed".

The tempting fix, ``weights_only=False``, would let any checkpoint run code on
load -- and work dirs are exactly where people drop checkpoints downloaded
from a model zoo or copied from a colleague. Instead we keep ``weights_only``
and allowlist exactly the globals an mmengine checkpoint contains (see
:mod:`vvt_mm.checkpoint.safe_globals`: found by saving a real one, with a
restricted stand-in for the one risky name, ``builtins.getattr``).

:func:`enable_safe_resume` routes every mmengine checkpoint read (``--resume``,
``load_from``) through :func:`vvt_mm.checkpoint.read_checkpoint` with that
allowlist, and makes auto-resume (``--resume`` without a path) skip an empty
``last_checkpoint`` or a truncated newest checkpoint.
"""
from __future__ import annotations

import functools
import logging
import os
import os.path as osp
import re
from collections.abc import Callable

from mmengine.logging import print_log

from vvt_mm.checkpoint.loading import CorruptCheckpointError, checkpoint_problem, read_checkpoint
from vvt_mm.checkpoint.safe_globals import (
    MMENGINE_CHECKPOINT_GLOBALS,
    allow_mmengine_globals,
    mmengine_safe_globals,
)

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'enable_safe_resume', 'find_resumable_checkpoint',
    'is_intact_checkpoint', 'mmengine_safe_globals'
]


def is_intact_checkpoint(path: str) -> bool:
    """Whether ``path`` is a complete checkpoint (see :func:`checkpoint_problem`)."""
    return checkpoint_problem(path) is None


_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def _numbered_checkpoints(work_dir: str) -> list[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``work_dir``, newest (largest N) first."""
    if not osp.isdir(work_dir):
        return []
    found = []
    for name in os.listdir(work_dir):
        match = _CKPT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), osp.join(work_dir, name)))
    return [path for _, path in sorted(found, reverse=True)]


def find_resumable_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``--resume`` (without a path) should continue from.

    mmengine trusts ``work_dir/last_checkpoint`` blindly; it can be empty
    (killed while writing it) or name a file that is gone or truncated. We take
    it when it names an intact file, else the newest intact ``iter_N.pth`` /
    ``epoch_N.pth``, logging what was skipped; ``None`` when there is nothing
    to resume (training then starts from scratch, as in mmengine).
    """
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named)
    candidates += [p for p in _numbered_checkpoints(work_dir) if p not in candidates]
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print_log(f'auto-resume: skipping {path!r} ({problem})', logger='current',
                  level=logging.WARNING)
    print_log(f'auto-resume: no intact checkpoint in {work_dir!r}, training from scratch',
              logger='current', level=logging.WARNING)
    return None


def _corruption_hint(path: str) -> str:
    others = [p for p in _numbered_checkpoints(osp.dirname(osp.abspath(path)))
              if osp.abspath(p) != osp.abspath(path) and is_intact_checkpoint(p)]
    if others:
        return (f' Intact checkpoints in the same folder: {others[:3]}; resume from one '
                f'with --resume {others[0]}')
    return ''


def _wrap_loader(original: Callable) -> Callable:
    """Wrap mmengine's ``CheckpointLoader.load_checkpoint`` (a bound classmethod)."""

    @functools.wraps(original)
    def load_checkpoint(cls, filename: str, map_location=None, logger='current'):
        with allow_mmengine_globals():
            local = osp.expanduser(filename)
            if '://' not in filename and osp.isfile(local):
                try:
                    return read_checkpoint(local, map_location)
                except CorruptCheckpointError as err:
                    raise CorruptCheckpointError(str(err) + _corruption_hint(local)) \
                        from err.__cause__
            if '://' not in filename:
                raise FileNotFoundError(
                    f'checkpoint {filename!r} does not exist; check --resume/load_from '
                    '(or use --resume without a path to continue from the work dir)')
            return original(filename, map_location, logger)

    load_checkpoint._vvt_mm_safe = True
    return load_checkpoint


def enable_safe_resume() -> None:
    """Make mmengine load checkpoints with ``weights_only=True`` plus the allowlist.

    Call once before building the ``Runner`` (``tools/train.py`` and
    ``tools/test.py`` do). Idempotent. Local files go through
    :func:`vvt_mm.checkpoint.read_checkpoint` (clear errors for truncated
    files, opt-in ``VVT_MM_ALLOW_UNSAFE_CHECKPOINT=1`` for trusted files with
    other objects); URLs and other schemes keep mmengine's loaders, run under
    the same allowlist.
    """
    from mmengine.runner import checkpoint as mm_checkpoint
    from mmengine.runner import runner as mm_runner

    loader = mm_checkpoint.CheckpointLoader
    if not getattr(loader.load_checkpoint, '_vvt_mm_safe', False):
        loader.load_checkpoint = classmethod(_wrap_loader(loader.load_checkpoint))
    mm_checkpoint.find_latest_checkpoint = find_resumable_checkpoint
    mm_runner.find_latest_checkpoint = find_resumable_checkpoint
