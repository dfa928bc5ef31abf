"""Glue that lets one launch command run on GPU clusters and on CPU-only machines."""
from .config import configs_dir, load_config
from .launch import prepare_launch, replace_sync_bn
from .metrics import apply_eval_metrics

__all__ = ['configs_dir', 'load_config', 'prepare_launch', 'replace_sync_bn', 'apply_eval_metrics']
