"""vvt_mm: Vicinity Vision Transformer and locality-aware backbones for OpenMMLab.

Importing the package registers every backbone in mmengine's root ``MODELS``
registry, so ``custom_imports = dict(imports=['vvt_mm'])`` is all a config of
mmsegmentation, mmdetection or mmpretrain needs. The ImageNet-1k classifiers
join mmpretrain's model list (``mmpretrain.list_models('*vvt*')``,
``get_model``) once mmpretrain is imported.
"""
from . import models  # noqa: F401  (registers the backbones)
from .model_zoo import register_with_mmpretrain
from .models.backbones import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA
from .version import __version__

register_with_mmpretrain()

__all__ = ['__version__', 'VVT', 'LocalViT', 'LocalViTPVT', 'ViTAEv2VSA', 'LVT']
