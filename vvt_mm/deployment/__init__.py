"""Deployment: ONNX export with dynamic H, W and its check in onnxruntime."""
from .onnx import (
    MAX_RELATIVE_ERROR,
    SIZE_RANGE,
    ExportError,
    OutputError,
    compare_with_onnxruntime,
    dynamic_size_range,
    export_onnx,
    export_problems,
    use_exportable_pooling,
    verification_sizes,
)
from .wrappers import ClassifierLogits, SegmentorLogits

__all__ = [
    'MAX_RELATIVE_ERROR', 'SIZE_RANGE', 'ExportError', 'OutputError', 'ClassifierLogits',
    'SegmentorLogits', 'compare_with_onnxruntime', 'dynamic_size_range', 'export_onnx',
    'export_problems', 'use_exportable_pooling', 'verification_sizes'
]
