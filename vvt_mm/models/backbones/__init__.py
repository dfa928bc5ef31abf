"""Backbones, registered in mmengine's root MODELS registry."""
from .vitaev2_vsa import ViTAEv2VSA
from .vvt import VVT

__all__ = ['VVT', 'ViTAEv2VSA']
