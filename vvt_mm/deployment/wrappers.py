"""What an exported graph computes for each kind of model: tensors in, tensors out.

OpenMMLab models take an image batch plus data samples and return data
samples; an ONNX graph takes the normalised image batch and returns tensors.
These wrappers are that interface, and nothing else: no data preprocessor
(normalise before the graph), no post-processing beyond what the model's own
``predict`` does to its tensors.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ['ClassifierLogits', 'SegmentorLogits']


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier from images to its head's class logits.

    ``model(x, mode='tensor')``: backbone, neck and head, before the softmax
    (or sigmoid) that ``predict`` applies to make scores.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, mode='tensor')


class SegmentorLogits(nn.Module):
    """An mmseg ``EncoderDecoder`` from images to per-pixel class logits.

    The decode head's logits resized to the input size, as the segmentor's
    whole-image inference does before its argmax (auxiliary heads do not take
    part in inference).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model.decode_head(self.model.extract_feat(x))
        return F.interpolate(logits, size=x.shape[2:], mode='bilinear',
                             align_corners=self.model.align_corners)
