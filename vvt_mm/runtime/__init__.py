"""Glue that lets one launch command run on GPU clusters and on CPU-only machines."""
from .launch import prepare_launch, replace_sync_bn
from .metrics import apply_eval_metrics

__all__ = ['prepare_launch', 'replace_sync_bn', 'apply_eval_metrics']
