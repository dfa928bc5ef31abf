"""Models of vvt_mm: attention modules, shared layers and backbones."""
from . import attention  # noqa: F401  (fills the ATTENTIONS registry)
from .backbones import *  # noqa: F401,F403

