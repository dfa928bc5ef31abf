"""Property-based tests (hypothesis) over input sizes, batch sizes, dtypes and archs.

Any H, W >= 32 (odd, prime, non-square) must give the four maps at the sizes
the patch-embedding convolutions imply (computed independently below), in the
input's dtype, finite, and each sample must not depend on the rest of its
batch; anything smaller must be refused with the size in the message. Runs are
derandomized so CI sees the same examples every time. ``pytest -s`` prints how
many shapes/dtypes were tried.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vvt_mm.models.backbones.vvt import VVT

TRIED: Counter = Counter()
DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16,
          'float16': torch.float16}
TOL = {'float32': 1e-4, 'float64': 1e-10, 'bfloat16': 0.1, 'float16': 1e-2}
PRIMES = [37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 127]

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope='module', autouse=True)
def report_tried():
    yield
    shapes = {key[:2] for key in TRIED}
    print(f'\nfuzz: {sum(TRIED.values())} forward passes, {len(shapes)} distinct HxW, '
          f'{len({k[2] for k in TRIED})} batch sizes, per dtype '
          f'{dict(sorted(Counter(k[3] for k in TRIED.elements()).items()))}, '
          f'archs {sorted({k[4] for k in TRIED})}, '
          f'{sum(1 for h, w in shapes if h % 2 or w % 2)} with an odd side, '
          f'{sum(1 for h, w in shapes if h in PRIMES or w in PRIMES)} with a prime side')


def expected_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Conv output size floor((n + 2p - k) / s) + 1 for 7x7/s4/p3, then 3x3/s2/p1."""
    sizes = []
    for k, s, p in ((7, 4, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1)):
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        sizes.append((h, w))
    return sizes


sides = st.one_of(st.integers(32, 100), st.sampled_from(PRIMES))


@st.composite
def small_archs(draw):
    """Random custom archs: widths divisible by 2 * heads (feature reduction 2)."""
    heads = [draw(st.integers(1, 2)) for _ in range(4)]
    return dict(embed_dims=[2 * h * draw(st.integers(2, 4)) for h in heads], num_heads=heads,
                depths=[draw(st.integers(1, 2)) for _ in range(4)],
                mlp_ratios=[draw(st.sampled_from([1, 2, 4])) for _ in range(4)])


def build(arch, dtype: torch.dtype, seed: int = 0) -> VVT:
    torch.manual_seed(seed)
    model = VVT(arch=arch, drop_path_rate=0.)
    model.init_weights()
    return model.eval().to(dtype)


@FUZZ
@given(arch=small_archs(), h=sides, w=sides, batch=st.integers(1, 3),
       dtype=st.sampled_from(sorted(DTYPES)))
def test_any_size_from_32_gives_the_conv_arithmetic_sizes_finite_and_batch_independent(
        arch, h, w, batch, dtype):
    TRIED[(h, w, batch, dtype, 'custom')] += 1
    model = build(arch, DTYPES[dtype])
    x = torch.randn(batch, 3, h, w).to(DTYPES[dtype])
    with torch.no_grad():
        outs = model(x)
        last_alone = model(x[-1:])
    assert [tuple(o.shape[2:]) for o in outs] == expected_sizes(h, w)
    assert [o.shape[1] for o in outs] == arch['embed_dims']
    for out, alone in zip(outs, last_alone):
        assert out.dtype == DTYPES[dtype] and out.shape[0] == batch
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[-1:].double(), alone.double(), rtol=TOL[dtype],
                                   atol=TOL[dtype])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(h=st.integers(1, 200), w=st.integers(1, 200))
def test_sizes_below_the_total_stride_are_refused_and_the_rest_accepted(h, w):
    model = test_sizes_below_the_total_stride_are_refused_and_the_rest_accepted.model
    x = torch.zeros(1, 3, h, w)
    TRIED[(h, w, 1, 'float32', 'custom')] += 1
    if min(h, w) < 32:
        with pytest.raises(ValueError, match=f'at least 32x32 .*got {h}x{w}'):
            model(x)
    else:
        with torch.no_grad():
            assert [tuple(o.shape[2:]) for o in model(x)] == expected_sizes(h, w)


test_sizes_below_the_total_stride_are_refused_and_the_rest_accepted.model = build(
    dict(embed_dims=[4, 4, 4, 4], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
         mlp_ratios=[1, 1, 1, 1]), torch.float32)


@pytest.fixture(scope='module')
def real_tiny():
    return build('tiny', torch.float32)


@settings(max_examples=3, deadline=None, derandomize=True)
@given(h=st.sampled_from(PRIMES), w=st.sampled_from(PRIMES), batch=st.integers(1, 2))
def test_real_tiny_arch_on_prime_sizes(real_tiny, h, w, batch):
    TRIED[(h, w, batch, 'float32', 'tiny')] += 1
    with torch.no_grad():
        outs = real_tiny(torch.randn(batch, 3, h, w))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (c, *s) for c, s in zip([96, 160, 320, 512], expected_sizes(h, w))]
    assert all(torch.isfinite(o).all() for o in outs)
    # The first stage really is ceil(n / 4): no token is dropped at odd sizes.
    assert outs[0].shape[2:] == (math.ceil(h / 4), math.ceil(w / 4))
