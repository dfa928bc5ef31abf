"""Numerical robustness of VVT: mixed precision, extreme inputs, batch independence, determinism.

Mixed precision (the claim: fp16 and bf16 autocast forward+backward of every
arch at 1024x1024 are finite) is tested on CPU, where CI runs (2 cores):

* ``test_every_arch_at_1024_on_cpu``: the whole claim, every arch x {fp16,
  bf16}, 1x3x1024x1024, forward + backward (about 2.5 min for all eight on one
  core). bf16 runs natively. CPU float16 matmuls and convolutions are scalar
  fallbacks (minutes per model), so fp16 runs under
  :class:`fp16_emulation.EmulatedHalfMatmul`: those ops get float16 inputs,
  accumulate in float32 and round their result once to float16, as CUDA's
  kernels do; every other op runs natively in float16. Backward uses
  unit-scale upstream gradients (see :func:`backward_unit_upstream`) and every
  parameter must get a non-zero gradient, so "finite" is not vacuous.
* ``test_emulated_fp16_*``: that emulation agrees with native CPU float16, op
  by op (to one rounding) and on a whole VVT-T at 64x64, and no float16
  matmul or conv escapes it.
* ``test_attention_at_1024_token_counts_*`` and ``test_every_block_type_*``:
  cheaper, stricter checks of the parts whose range depends on the input size
  (the attention's reductions over tokens must stay close to fp32, not only
  finite).
* ``test_every_arch_at_1024_on_cuda`` runs the same claim on CUDA's own kernels
  (and the Triton attention) where a GPU exists.
"""
from __future__ import annotations

import contextlib
import statistics

import pytest
import torch
import torch.nn.functional as F
from fp16_emulation import EmulatedHalfMatmul

from vvt_mm.models.attention import VicinityAttention
from vvt_mm.models.backbones.vvt import VVT, VVTBlock

DTYPES = [torch.float16, torch.bfloat16]
ARCHS = ['tiny', 'small', 'medium', 'large']
STAGES = [  # (embed_dims, num_heads, side of the token map for a 1024x1024 input)
    (96, 1, 256), (160, 2, 128), (320, 5, 64), (512, 8, 32)]


def block_types() -> list[tuple[int, int, int, float]]:
    """Distinct (stage, embed_dims, num_heads, mlp_ratio) over every arch of the zoo."""
    kinds = set()
    for arch in ('tiny', 'small', 'medium', 'large'):
        cfg = VVT.arch_zoo[arch]
        for i in range(4):
            kinds.add((i, cfg['embed_dims'][i], cfg['num_heads'][i], cfg['mlp_ratios'][i]))
    return sorted(kinds)


def all_finite(*tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('dims, heads, side', STAGES, ids=['stage1', 'stage2', 'stage3',
                                                           'stage4'])
def test_attention_at_1024_token_counts_is_finite_and_close_to_fp32(dims, heads, side, dtype):
    torch.manual_seed(0)
    attn = VicinityAttention(dims, heads)
    x = torch.randn(1, side * side, dims)  # LayerNorm output: unit scale per token
    ref = attn(x, (side, side))
    x.requires_grad_(True)
    with torch.autocast('cpu', dtype=dtype):
        out = attn(x, (side, side))
    out.float().square().mean().backward()
    grads = [p.grad for p in attn.parameters()]
    assert all_finite(out, x.grad, *grads)
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert rel < (0.02 if dtype == torch.float16 else 0.05), rel


@pytest.mark.parametrize('stage, dims, heads, mlp_ratio', block_types())
def test_every_block_type_is_finite_in_bf16_at_1024_and_fp16(stage, dims, heads, mlp_ratio):
    torch.manual_seed(stage)
    block = VVTBlock(dims, heads, mlp_ratio, dict(type='vicinity', feature_reduction=2))
    for m in block.modules():  # the backbone's own init (trunc-normal 0.02 linears)
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.trunc_normal_(m.weight, std=0.02)
    for dtype, side in ((torch.bfloat16, STAGES[stage][2] if stage else 32),
                        (torch.float16, 4)):
        x = torch.randn(1, side * side, dims, requires_grad=True)
        with torch.autocast('cpu', dtype=dtype):
            out = block(x, (side, side))
        out.float().square().mean().backward()
        assert all_finite(out, x.grad, *[p.grad for p in block.parameters()]), dtype
        block.zero_grad()


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    model = VVT(arch='tiny', drop_path_rate=0.)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('scale', [0., 1e4, 1e8], ids=['zeros', 'x1e4', 'x1e8'])
def test_zero_and_huge_inputs_give_finite_outputs_and_grads(tiny, scale):
    x = (torch.randn(1, 3, 32, 48) * scale).requires_grad_(True)
    for dtype in (None, torch.bfloat16):
        with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            outs = tiny(x)
        sum(o.float().mean() for o in outs).backward()
        assert all_finite(*outs, x.grad), (scale, dtype)
        tiny.zero_grad()
        x.grad = None


def test_each_sample_gives_the_same_output_alone_or_in_any_batch(tiny):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 64, 96)
    order = [2, 0, 1]
    with torch.no_grad():
        batched = tiny(images)
        shuffled = tiny(images[order])
        for i in range(3):
            alone = tiny(images[i:i + 1])
            for b, s, a in zip(batched, shuffled, alone):
                torch.testing.assert_close(b[i:i + 1], a, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(s[order.index(i)][None], a, rtol=1e-4, atol=1e-5)


def _seeded_training_steps(seed: int, steps: int = 2) -> tuple[list[float], dict]:
    torch.manual_seed(seed)
    arch = dict(embed_dims=[16, 32, 32, 32], num_heads=[1, 2, 2, 2], depths=[1, 2, 1, 1],
                mlp_ratios=[2, 2, 2, 2])
    model = VVT(arch=arch, drop_path_rate=0.2)  # stochastic depth draws from the RNG
    model.init_weights()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = sum(o.square().mean() for o in model(torch.randn(2, 3, 32, 64)))
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    return losses, {k: v.clone() for k, v in model.state_dict().items()}


def test_fixed_seed_on_cpu_is_bitwise_deterministic():
    losses_a, state_a = _seeded_training_steps(0)
    losses_b, state_b = _seeded_training_steps(0)
    _, state_c = _seeded_training_steps(1)
    assert losses_a == losses_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    # The seed matters, so the equalities above are not vacuous. Compared on the
    # weights, not the losses: every loss term is the mean square of a
    # LayerNorm's output, 1 - eps / var, which two seeds can round alike.
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA (minutes on CPU)')
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('arch', ARCHS)
def test_every_arch_at_1024_on_cuda(arch, dtype):
    outs, x, grads = whole_model_at_1024(arch, dtype, 'cuda')
    assert all_finite(*outs, x.grad, *grads)
    assert all(bool(g.any()) for g in grads)


def whole_model_at_1024(arch: str, dtype: torch.dtype, device: str,
                        mode: EmulatedHalfMatmul | None = None):
    """Autocast forward + backward of a whole VVT on one 1024x1024 image.

    Returns the outputs, the input (with its gradient) and the parameter
    gradients. ``mode`` wraps forward and backward (checkpoint recomputation
    runs inside it too).
    """
    torch.manual_seed(0)
    # Checkpointing keeps medium/large under ~4 GiB; it recomputes the same ops.
    model = VVT(arch=arch, drop_path_rate=0., with_cp=arch in ('medium', 'large')).to(device)
    model.init_weights()
    x = torch.randn(1, 3, 1024, 1024, device=device, requires_grad=True)
    with mode if mode is not None else contextlib.nullcontext():
        with torch.autocast(device, dtype=dtype):
            outs = model(x)
        backward_unit_upstream(outs)  # a mean loss would flush fp16 gradients to zero
    return outs, x, [p.grad for p in model.parameters()]


def backward_unit_upstream(outs: tuple[torch.Tensor, ...], seed: int = 1) -> None:
    """Backward with a fixed N(0, 1) gradient on every output element.

    A mean loss at 1024x1024 gives each output element a gradient near 1e-7,
    below float16's smallest normal (6e-5): most fp16 gradients would flush to
    zero and "finite" would hold vacuously. Unit-scale upstream gradients (the
    scale a loss scaler aims for) keep every gradient in range and non-zero.
    """
    gen = torch.Generator().manual_seed(seed)
    sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).sum()
        for o in outs).backward()


def _norm_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


OP_CASES = {  # name: (function, input shapes); each runs forward and backward
    'linear': (F.linear, [(512, 384), (96, 384), (96,)]),
    'bmm': (torch.matmul, [(4, 128, 48), (4, 48, 64)]),
    'baddbmm': (torch.baddbmm, [(4, 128, 64), (4, 128, 48), (4, 48, 64)]),
    'patch_conv': (lambda x, w, b: F.conv2d(x, w, b, stride=4, padding=3),
                   [(1, 3, 64, 64), (96, 3, 7, 7), (96,)]),
    'depthwise_conv': (lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=192),
                       [(1, 192, 32, 32), (192, 1, 3, 3), (192,)]),
}


def _op_forward_backward(case: str, dtype: torch.dtype = torch.float16,
                         mode: EmulatedHalfMatmul | None = None) -> list[torch.Tensor]:
    """Output and input grads of one op on fixed float16 values, computed in ``dtype``.

    float64 gives the exact result on the same values; ``mode`` wraps the call.
    """
    fn, shapes = OP_CASES[case]
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=gen).half().to(dtype).requires_grad_(True)
              for s in shapes]
    with mode if mode is not None else contextlib.nullcontext():
        out = fn(*inputs)
        out.backward(torch.randn(out.shape, generator=gen).half().to(dtype))
    return [out, *(t.grad for t in inputs)]


@pytest.mark.parametrize('case', OP_CASES)
def test_emulated_fp16_ops_match_native_cpu_fp16(case):
    mode = EmulatedHalfMatmul(audit=True)
    emulated = _op_forward_backward(case, mode=mode)
    native = _op_forward_backward(case)
    assert mode.emulated and not mode.escaped_slow_ops(), (mode.emulated, mode.native_half)
    for e, n, x in zip(emulated, native, _op_forward_backward(case, torch.float64)):
        assert e.dtype == n.dtype == torch.float16
        # Emulated = the exact result rounded once to float16 (relative error
        # 2e-4, below the unit roundoff 2^-11). Native matmuls agree to the
        # bit on >99% of elements; native conv input-grads also round their
        # intermediate columns to float16 (2.5x the error): never more accurate.
        assert _norm_rel(e, x) <= 2 ** -11
        assert _norm_rel(e, x) <= 1.05 * _norm_rel(n, x)
        assert _norm_rel(e, n) <= 2 ** -9


def _tiny_fp16_step(kind: str, side: int = 64) -> list[torch.Tensor]:
    """VVT-T output maps, input grad and parameter grads for one fp16 step."""
    torch.manual_seed(0)
    model = VVT(arch='tiny', drop_path_rate=0.)
    model.init_weights()
    x = torch.randn(1, 3, side, side, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.float16, enabled=kind != 'fp32'):
        outs = model(x)
    backward_unit_upstream(outs)
    return [*outs, x.grad, *(p.grad for p in model.parameters())]


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread: the CPU kernels' reduction order, and so their
    rounding, no longer depends on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_emulated_fp16_whole_model_tracks_native_fp16():
    mode = EmulatedHalfMatmul(audit=True)
    with _one_thread():
        with mode:
            emulated = _tiny_fp16_step('fp16')
        native = _tiny_fp16_step('fp16')
        ref = _tiny_fp16_step('fp32')
    assert not mode.escaped_slow_ops(), mode.native_half
    assert {'mm', 'addmm', 'convolution', 'convolution_backward'} <= set(mode.emulated)
    for e, n in zip(emulated[:5], native[:5]):  # the four output maps and the input grad
        assert _norm_rel(e, n) < 1e-2
    # Parameter grads go through ReLUs and the attention's clamps, which turn
    # one-ulp differences into larger ones (stage 4 is a 2x2 map here): emulated
    # fp16 must be about as far from fp32 as native fp16 is: neither much further
    # nor much closer (it stands in for fp16's error, not for fp32). Native fp16
    # kernels differ between CPUs; emulated/native was at most 1.6x per tensor
    # and under 1.5x in the median on one machine kind, 1.86x and 1.44x on one
    # with AVX512-FP16 (one thread; 1.99x and 1.61x with two).
    emu_err = [_norm_rel(e, r) for e, r in zip(emulated[5:], ref[5:])]
    native_err = [_norm_rel(n, r) for n, r in zip(native[5:], ref[5:])]
    assert all(e <= 2.5 * n + 1e-3 for e, n in zip(emu_err, native_err))
    assert 0.5 <= statistics.median(emu_err) / statistics.median(native_err) <= 2


@pytest.mark.slow
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('arch', ARCHS)
def test_every_arch_at_1024_on_cpu(arch, dtype):
    mode = EmulatedHalfMatmul(audit=True) if dtype == torch.float16 else None
    outs, x, grads = whole_model_at_1024(arch, dtype, 'cpu', mode)
    assert all(o.dtype == dtype for o in outs)
    assert all_finite(*outs, x.grad, *grads)
    assert all(bool(g.any()) for g in grads)  # no gradient flushed entirely to zero
    if mode is not None:
        assert not mode.escaped_slow_ops(), mode.native_half
        assert {'mm', 'addmm', 'convolution', 'convolution_backward'} <= set(mode.emulated)
