"""Building blocks shared by the backbones."""
from .conv_ffn import ConvFFN
from .locality_ffn import HiddenECA, HiddenSE, LocalityFFN
from .lvt_attention import (
    AtrousDepthwiseConv,
    ConvolutionalSelfAttention,
    RecursiveAtrousSelfAttention,
)
from .patch_embed import OverlapPatchEmbed
from .strided_patch_embed import StridedPatchEmbed
from .varied_size_window_attention import VariedSizeWindowAttention, vsa_sampling_grid
from .vitaev2_cells import NormalCell, PyramidReductionModule, ReductionCell

__all__ = [
    'ConvFFN', 'OverlapPatchEmbed', 'VariedSizeWindowAttention', 'vsa_sampling_grid',
    'NormalCell', 'PyramidReductionModule', 'ReductionCell', 'HiddenECA', 'HiddenSE',
    'LocalityFFN', 'AtrousDepthwiseConv', 'ConvolutionalSelfAttention',
    'RecursiveAtrousSelfAttention', 'StridedPatchEmbed'
]
