"""Registries of vvt_mm.

Backbones register in mmengine's root ``MODELS`` so every downstream library
(whose registries are children of the root) finds them. Token mixers live in
their own ``ATTENTIONS`` registry: they are interchangeable parts of a block,
built from a block's ``attn_cfg``, never from a top-level config.
"""
from mmengine.registry import MODELS, Registry

ATTENTIONS = Registry('vvt_mm attention',
                      locations=['vvt_mm.models.attention', 'vvt_mm.models.layers'])

__all__ = ['MODELS', 'ATTENTIONS']
