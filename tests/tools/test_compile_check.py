"""tools/analysis/compile_check.py: the recompiles it counts come with the guard that failed."""
from __future__ import annotations

import torch
import torch._dynamo

from vvt_mm.testing import load_tool

compile_check = load_tool('tools/analysis/compile_check.py')


def test_a_square_first_size_is_named_as_the_cause_of_the_next_compile():
    def row_means(x: torch.Tensor) -> torch.Tensor:
        return x.mean(-1)

    torch._dynamo.reset()
    compiled = torch.compile(row_means, backend='eager', dynamic=True)
    try:
        with compile_check.recompile_reasons() as reasons:
            compiled(torch.randn(5, 5))   # duck sizing: dynamo assumes rows == columns
            compiled(torch.randn(6, 6))   # same assumption holds: no new compile
            assert reasons == []
            compiled(torch.randn(5, 7))
    finally:
        torch._dynamo.reset()
    assert len(reasons) == 1 and 'x.size()[1] == x.size()[0]' in reasons[0], reasons
    # Outside the block dynamo's own lookup is back.
    assert compile_check.convert_frame.get_and_maybe_log_recompilation_reasons.__name__ != \
        'recording'
