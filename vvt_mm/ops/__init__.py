"""The attention math, below the models: pure functions of tensors and token grids.

* :mod:`.vicinity_reference` -- the official vicinity formulation and its clamp;
* :mod:`.vicinity_separable` -- the exact separable form, registered as a
  ``torch.library`` op pair (forward, backward) for the compiler;
* :mod:`.clamped_gate` -- the Feature Preserving Connection between the
  official output clamps, fused (eager);
* :mod:`.vicinity_triton` -- a fused CUDA forward (needs Triton; imported lazily
  by :func:`vvt_mm.models.attention.vicinity_dispatch.vicinity_attention`).

Importing this package registers the ``vvt_mm::vicinity_separable_*`` ops.
"""
from .clamped_gate import clamped_feature_preserving
from .vicinity_reference import (
    ABS_CLAMP_MAX,
    ABS_CLAMP_MIN,
    NORMALISER_EPS,
    abs_clamp,
    check_vicinity_shapes,
    vicinity_angles,
    vicinity_attention_reference,
)
from .vicinity_separable import (
    clamp_kv_state_,
    vicinity_attention_separable,
    vicinity_kv_state,
)

__all__ = [
    'ABS_CLAMP_MAX', 'ABS_CLAMP_MIN', 'NORMALISER_EPS', 'abs_clamp', 'check_vicinity_shapes',
    'clamped_feature_preserving',
    'vicinity_angles', 'vicinity_attention_reference', 'clamp_kv_state_',
    'vicinity_attention_separable', 'vicinity_kv_state'
]
