"""vvt_mm: Vicinity Vision Transformer and locality-aware backbones for OpenMMLab.

Importing the package registers every backbone in mmengine's root ``MODELS``
registry, so ``custom_imports = dict(imports=['vvt_mm'])`` is all a config of
mmsegmentation, mmdetection or mmpretrain needs. It also registers the
training helpers a config may name (``CheckpointSafetyHook``,
``NonFiniteLossHook``, ``SaveOnSignalHook``, ``SampleErrorHook``,
``CPUAutocastOptimWrapper``) and allowlists the objects of mmengine's own
checkpoints for ``torch.load(weights_only=True)``, so the libraries' stock
tools load checkpoints of our models without ``weights_only=False``.
The ImageNet-1k classifiers join mmpretrain's model list
(``mmpretrain.list_models('*vvt*')``, ``get_model``) once mmpretrain is imported.
"""
from . import (
    engine,  # noqa: F401  (registers the hooks and the CPU AMP wrapper)
    models,  # noqa: F401  (registers the backbones)
)
from .checkpoint.safe_globals import register_mmengine_safe_globals
from .model_zoo import register_with_mmpretrain
from .models.backbones import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA
from .version import __version__

register_mmengine_safe_globals()
register_with_mmpretrain()

__all__ = ['__version__', 'VVT', 'LocalViT', 'LocalViTPVT', 'ViTAEv2VSA', 'LVT']
