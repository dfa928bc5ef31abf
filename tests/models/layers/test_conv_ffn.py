"""ConvFFN: without autograd, large maps run in stripes of rows with the same result."""
import pytest
import torch

from vvt_mm.models.layers import ConvFFN


@pytest.mark.parametrize('hw', [(13, 9), (1, 5), (7, 1), (8, 8)])
@pytest.mark.parametrize('stripe_rows', [1, 2, 3, 100])
def test_stripes_equal_the_whole_map(hw, stripe_rows):
    """Halo rows inside the map, zero rows at its edges: the 3x3 conv sees the same input."""
    torch.manual_seed(0)
    ffn = ConvFFN(16, 64).eval()
    x = torch.randn(2, hw[0] * hw[1], 16)
    with torch.no_grad():
        whole = ffn(x, hw)  # below the threshold: one pass over the map
        ffn.stripe_elements = stripe_rows * hw[1] * 64 * 4  # stripes of stripe_rows rows
        striped = ffn._forward_in_stripes(x, hw)
    torch.testing.assert_close(striped, whole, rtol=1e-6, atol=1e-6)


def test_only_large_maps_without_autograd_are_striped(monkeypatch):
    torch.manual_seed(0)
    ffn = ConvFFN(8, 16)
    calls = []
    striped = ffn._forward_in_stripes
    monkeypatch.setattr(ffn, '_forward_in_stripes',
                        lambda *a: calls.append(1) or striped(*a))
    x = torch.randn(1, 12 * 4, 8, requires_grad=True)
    ffn.stripe_elements = 12 * 4 * 16  # this map is exactly at the threshold: not striped
    with torch.no_grad():
        ffn(x, (12, 4))
    assert calls == []
    ffn.stripe_elements -= 1
    with torch.no_grad():
        out = ffn(x, (12, 4))
    assert calls == [1] and out.shape == (1, 48, 8)
    # With autograd: the whole map, one graph, the saved tensors as before.
    ffn(x, (12, 4)).sum().backward()
    assert calls == [1] and x.grad is not None
