"""A hook that gives any mm ``tools/train.py`` / ``tools/test.py`` our checkpoint safety.

Our own tools enable safe reading, safe auto-resume and atomic writing before
they build the ``Runner``. The libraries' stock scripts do not know about us,
but they build every hook a config names, and they build hooks in
``Runner.__init__``, before the runner resumes, loads or saves anything. So::

    custom_hooks = [dict(type='CheckpointSafetyHook')]

in a config (ours all have it) is enough for ``mmseg``/``mmdet``/``mmpretrain``'s
``tools/train.py --resume`` and ``tools/test.py`` to read checkpoints with
``weights_only=True`` (with clear errors for damaged files), to auto-resume
from the newest intact checkpoint, and to write checkpoints atomically.

In a distributed run every rank resumes from its own view of the work dir. On
node-local disks only node 0 has the checkpoints (rank 0 writes them), so the
other nodes would silently start from scratch beside a resumed node 0; before
the first iteration the hook checks that all ranks start at the same one and
raises :class:`ResumeMismatchError` naming them otherwise.
"""
from __future__ import annotations

import torch
from mmengine.dist import all_gather, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .atomic_checkpoint import enable_atomic_checkpoints
from .safe_resume import enable_safe_resume

__all__ = ['CheckpointSafetyHook', 'ResumeMismatchError']


class ResumeMismatchError(RuntimeError):
    """The ranks of a distributed run would start training at different iterations."""


@HOOKS.register_module()
class CheckpointSafetyHook(Hook):
    """Enable :func:`enable_safe_resume` and :func:`enable_atomic_checkpoints`; check
    that the ranks of a distributed run start training at the same iteration.

    Args:
        atomic_save: write checkpoints atomically (temp file + rename).
    """

    priority = 'VERY_HIGH'

    def __init__(self, atomic_save: bool = True) -> None:
        enable_safe_resume()
        if atomic_save:
            enable_atomic_checkpoints()

    def before_train(self, runner) -> None:
        if get_world_size() < 2:
            return
        starts = [int(t) for t in all_gather(torch.tensor(runner.iter, dtype=torch.int64))]
        if len(set(starts)) == 1:
            return
        by_iter: dict[int, list[int]] = {}
        for rank, start in enumerate(starts):
            by_iter.setdefault(start, []).append(rank)
        where = '; '.join(f'rank {", ".join(map(str, ranks))} at iteration {start}'
                          for start, ranks in sorted(by_iter.items()))
        raise ResumeMismatchError(
            f'the ranks would start training at different iterations ({where}): a rank '
            'whose work dir has no checkpoint starts from scratch. Put the work dir on '
            'storage every node sees, or pass --resume CKPT with a path every node can read')
