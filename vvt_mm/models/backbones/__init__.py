"""Backbones, registered in mmengine's root MODELS registry."""
from .localvit import LocalViT
from .localvit_pvt import LocalViTPVT
from .lvt import LVT
from .vitaev2_vsa import ViTAEv2VSA
from .vvt import VVT

__all__ = ['VVT', 'ViTAEv2VSA', 'LocalViT', 'LocalViTPVT', 'LVT']
