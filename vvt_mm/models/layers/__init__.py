"""Building blocks shared by the backbones."""
from .conv_ffn import ConvFFN
from .patch_embed import OverlapPatchEmbed
from .varied_size_window_attention import VariedSizeWindowAttention, vsa_sampling_grid
from .vitaev2_cells import NormalCell, PyramidReductionModule, ReductionCell

__all__ = [
    'ConvFFN', 'OverlapPatchEmbed', 'VariedSizeWindowAttention', 'vsa_sampling_grid',
    'NormalCell', 'PyramidReductionModule', 'ReductionCell'
]
