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
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .atomic_checkpoint import enable_atomic_checkpoints
from .safe_resume import enable_safe_resume

__all__ = ['CheckpointSafetyHook']


@HOOKS.register_module()
class CheckpointSafetyHook(Hook):
    """Enable :func:`enable_safe_resume` and :func:`enable_atomic_checkpoints`.

    Args:
        atomic_save: write checkpoints atomically (temp file + rename).
    """

    priority = 'VERY_HIGH'

    def __init__(self, atomic_save: bool = True) -> None:
        enable_safe_resume()
        if atomic_save:
            enable_atomic_checkpoints()
