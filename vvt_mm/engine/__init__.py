"""Training-loop reliability: safe resume, atomic checkpoints, dataset checks, CPU AMP,
a stop at the first non-finite loss, a checkpoint on SIGTERM, errors that name a bad sample,
optimizer groups that mmengine's ``compile=`` can trace.

``tools/train.py`` and ``tools/test.py`` call these before building the
mmengine ``Runner``; the hooks (:class:`CheckpointSafetyHook`,
:class:`NonFiniteLossHook`, :class:`SaveOnSignalHook`, :class:`SampleErrorHook`,
:class:`TorchCompileHook`)
bring them to the libraries' own tools through a config's ``custom_hooks``.
Nothing here is needed to use the backbones themselves.
"""
from .atomic_checkpoint import atomic_save, atomic_save_checkpoint, enable_atomic_checkpoints
from .checkpoint_safety_hook import CheckpointSafetyHook, ResumeMismatchError
from .compile_hook import TorchCompileHook, add_compile_hook, plain_param_groups
from .cpu_autocast import CPUAutocastOptimWrapper
from .dataset_checks import DatasetLayoutError, check_dataset_layout, dataset_problem
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook
from .safe_resume import (
    MMENGINE_CHECKPOINT_GLOBALS,
    enable_safe_resume,
    find_resumable_checkpoint,
    is_intact_checkpoint,
    mmengine_safe_globals,
)
from .sample_errors import (
    SampleErrorHook,
    SampleLoadError,
    SamplePipeline,
    enable_sample_error_context,
    name_sample_errors,
)
from .save_on_signal_hook import SaveOnSignalHook, TrainingInterrupted

__all__ = [
    'CheckpointSafetyHook', 'CPUAutocastOptimWrapper', 'atomic_save', 'atomic_save_checkpoint',
    'enable_atomic_checkpoints', 'DatasetLayoutError', 'check_dataset_layout', 'dataset_problem',
    'MMENGINE_CHECKPOINT_GLOBALS', 'enable_safe_resume', 'find_resumable_checkpoint',
    'is_intact_checkpoint', 'mmengine_safe_globals', 'NonFiniteLossError', 'NonFiniteLossHook',
    'SampleErrorHook', 'SampleLoadError', 'SamplePipeline', 'enable_sample_error_context',
    'name_sample_errors', 'SaveOnSignalHook', 'TrainingInterrupted', 'ResumeMismatchError',
    'TorchCompileHook', 'add_compile_hook', 'plain_param_groups'
]
