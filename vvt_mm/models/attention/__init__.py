"""Token mixers, one per file, registered in :data:`vvt_mm.registry.ATTENTIONS`."""
from .builder import attention_names, build_attention
from .cosformer import CosFormerAttention, cosformer_attention
from .gc import GlobalContextAttention
from .linformer import LinformerAttention
from .performer import PerformerAttention, performer_attention
from .softmax import SoftmaxAttention
from .spatial_reduction import SpatialReductionAttention
from .vicinity import VicinityAttention
from .vicinity_dispatch import vicinity_attention
from .vicinity_no_locality import VicinityNoLocalityAttention, relu_linear_attention

__all__ = [
    'VicinityAttention', 'vicinity_attention', 'attention_names', 'build_attention',
    'CosFormerAttention', 'cosformer_attention', 'GlobalContextAttention', 'LinformerAttention',
    'PerformerAttention', 'performer_attention', 'SoftmaxAttention', 'SpatialReductionAttention',
    'VicinityNoLocalityAttention', 'relu_linear_attention'
]
