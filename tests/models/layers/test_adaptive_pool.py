"""Adaptive average pooling as matrices (its export form) equals torch's kernel."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vvt_mm.models.layers.adaptive_pool import AdaptiveAvgPool2d, adaptive_avg_pool2d


@pytest.mark.parametrize('size, output', [((16, 24), 6), ((7, 5), 3), ((5, 9), 16),
                                          ((33, 17), (2, None)), ((8, 8), 1)])
def test_export_form_equals_adaptive_avg_pool2d(size, output, monkeypatch):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, output)
    monkeypatch.setattr(torch.compiler, 'is_exporting', lambda: True)
    got = adaptive_avg_pool2d(x, output)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(AdaptiveAvgPool2d(output)(x), expected, rtol=0, atol=1e-14)


def test_eager_runs_the_native_kernel():
    x = torch.randn(1, 4, 9, 13)
    assert torch.equal(AdaptiveAvgPool2d((3, 5))(x), F.adaptive_avg_pool2d(x, (3, 5)))
