"""Building blocks shared by the backbones."""
from .conv_ffn import ConvFFN
from .patch_embed import OverlapPatchEmbed

__all__ = ['ConvFFN', 'OverlapPatchEmbed']
