"""Training-loop reliability: safe resume, atomic checkpoints, dataset checks.

``tools/train.py`` and ``tools/test.py`` call these before building the
mmengine ``Runner``; nothing here is needed to use the backbones themselves.
"""
from .atomic_checkpoint import atomic_save, atomic_save_checkpoint, enable_atomic_checkpoints
from .dataset_checks import DatasetLayoutError, check_dataset_layout, dataset_problem
from .safe_resume import (
    MMENGINE_CHECKPOINT_GLOBALS,
    enable_safe_resume,
    find_resumable_checkpoint,
    is_intact_checkpoint,
    mmengine_safe_globals,
)

__all__ = [
    'atomic_save', 'atomic_save_checkpoint', 'enable_atomic_checkpoints', 'DatasetLayoutError',
    'check_dataset_layout', 'dataset_problem', 'MMENGINE_CHECKPOINT_GLOBALS',
    'enable_safe_resume', 'find_resumable_checkpoint', 'is_intact_checkpoint',
    'mmengine_safe_globals'
]
