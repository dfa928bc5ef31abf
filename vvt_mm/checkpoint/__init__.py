"""Checkpoint reading, layout conversion and honest pretrained loading."""
from .key_layout import strip_prefix, to_classifier_keys
from .loading import (
    CheckpointError,
    CorruptCheckpointError,
    LoadReport,
    UnsafeCheckpointError,
    checkpoint_problem,
    extract_state_dict,
    load_pretrained,
    read_checkpoint,
)
from .localvit_keys import (
    convert_localvit,
    convert_localvit_pvt,
    is_official_localvit,
    is_official_localvit_pvt,
)
from .lvt_keys import convert_lvt, is_official_lvt
from .vitaev2_keys import convert_vitaev2_vsa, is_official_vitaev2_vsa
from .vvt_keys import convert_vvt, is_official_vvt
from .whole_model import (
    CheckpointMismatchError,
    check_whole_model,
    describe_load,
    load_whole_model,
    whole_model_state_dict,
)

__all__ = [
    'CheckpointError', 'CorruptCheckpointError', 'UnsafeCheckpointError', 'checkpoint_problem',
    'LoadReport', 'extract_state_dict', 'load_pretrained', 'read_checkpoint', 'convert_vvt',
    'is_official_vvt', 'convert_vitaev2_vsa', 'is_official_vitaev2_vsa', 'convert_localvit',
    'convert_localvit_pvt', 'is_official_localvit', 'is_official_localvit_pvt', 'convert_lvt',
    'is_official_lvt', 'CheckpointMismatchError', 'check_whole_model', 'load_whole_model',
    'whole_model_state_dict', 'describe_load', 'strip_prefix', 'to_classifier_keys'
]
