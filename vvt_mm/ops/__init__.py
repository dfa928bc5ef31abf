"""Optional accelerated kernels.

Nothing is imported here on purpose: kernels need optional packages (Triton)
and are loaded lazily by the code that dispatches to them, e.g.
:func:`vvt_mm.models.attention.vicinity_core.vicinity_attention`.
"""
