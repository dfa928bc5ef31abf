"""Whether the model is being exported, for layers that then take an exportable form."""
from __future__ import annotations

import torch


def is_exporting() -> bool:
    """Under ``torch.export`` (which the dynamo ONNX exporter runs) or TorchScript ONNX export."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()
