"""Backbones, registered in mmengine's root MODELS registry."""
from .vvt import VVT

__all__ = ['VVT']
