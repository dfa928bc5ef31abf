"""Bottom/right padding to a stride: sizes and values."""
from __future__ import annotations

import torch

from vvt_mm.models.layers.padding import pad_to_multiple, padded_size


def test_padded_size_rounds_up_to_the_multiple():
    assert [padded_size(n, 4) for n in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]
    assert all(padded_size(n, 7) == n + (-n % 7) for n in range(1, 50))


def test_pad_to_multiple_zero_pads_the_bottom_right_only():
    x = torch.randn(1, 2, 5, 7)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 2, 8, 8)
    assert torch.equal(y[:, :, :5, :7], x) and y[:, :, 5:].abs().sum() == 0
    assert y[:, :, :, 7:].abs().sum() == 0
    assert pad_to_multiple(x, 1) is x
    assert torch.equal(pad_to_multiple(y, 4), y)
