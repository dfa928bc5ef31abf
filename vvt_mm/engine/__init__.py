"""Training-loop reliability: safe resume, atomic checkpoints, dataset checks, CPU AMP.

``tools/train.py`` and ``tools/test.py`` call these before building the
mmengine ``Runner``; :class:`CheckpointSafetyHook` brings the checkpoint part
to the libraries' own tools through a config. Nothing here is needed to use
the backbones themselves.
"""
from .atomic_checkpoint import atomic_save, atomic_save_checkpoint, enable_atomic_checkpoints
from .checkpoint_safety_hook import CheckpointSafetyHook
from .cpu_autocast import CPUAutocastOptimWrapper
from .dataset_checks import DatasetLayoutError, check_dataset_layout, dataset_problem
from .safe_resume import (
    MMENGINE_CHECKPOINT_GLOBALS,
    enable_safe_resume,
    find_resumable_checkpoint,
    is_intact_checkpoint,
    mmengine_safe_globals,
)

__all__ = [
    'CheckpointSafetyHook', 'CPUAutocastOptimWrapper', 'atomic_save', 'atomic_save_checkpoint',
    'enable_atomic_checkpoints', 'DatasetLayoutError', 'check_dataset_layout', 'dataset_problem',
    'MMENGINE_CHECKPOINT_GLOBALS', 'enable_safe_resume', 'find_resumable_checkpoint',
    'is_intact_checkpoint', 'mmengine_safe_globals'
]
