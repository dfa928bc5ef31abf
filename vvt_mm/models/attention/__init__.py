"""Token mixers, one per file, registered in :data:`vvt_mm.registry.ATTENTIONS`."""
from .vicinity import VicinityAttention
from .vicinity_core import (abs_clamp, vicinity_attention, vicinity_attention_reference,
                            vicinity_attention_torch)

__all__ = [
    'VicinityAttention', 'abs_clamp', 'vicinity_attention', 'vicinity_attention_reference',
    'vicinity_attention_torch'
]
