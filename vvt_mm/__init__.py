"""vvt_mm: Vicinity Vision Transformer and locality-aware backbones for OpenMMLab.

Importing the package registers every backbone in mmengine's root ``MODELS``
registry, so ``custom_imports = dict(imports=['vvt_mm'])`` is all a config of
mmsegmentation, mmdetection or mmpretrain needs.
"""
from . import models  # noqa: F401  (registers the backbones)
from .version import __version__

__all__ = ['__version__']
