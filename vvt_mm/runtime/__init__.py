"""Glue that lets one launch command run on GPU clusters and on CPU-only machines."""
from .config import configs_dir, load_config
from .failures import exit_with_error
from .launch import (
    end_launch,
    parse_launch_args,
    prepare_launch,
    replace_sync_bn,
    slurm_dist_env,
)
from .metrics import apply_eval_metrics
from .model_builder import build_model_from_config, import_custom_modules
from .peers import PeerWatch, is_lost_peer_error

__all__ = ['configs_dir', 'load_config', 'prepare_launch', 'end_launch', 'replace_sync_bn',
           'slurm_dist_env',
           'apply_eval_metrics', 'exit_with_error', 'PeerWatch', 'is_lost_peer_error',
           'build_model_from_config', 'import_custom_modules', 'parse_launch_args']
