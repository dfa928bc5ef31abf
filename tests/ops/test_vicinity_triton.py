"""The fused Triton forward and backward equal the torch paths; failures fall back.

The kernels run on CPU through Triton's interpreter. ``TRITON_INTERPRET`` is
read when Triton is imported, so those checks run in a fresh interpreter
process. The fallback (a kernel that cannot compile or launch warns once, then
the separable torch path runs) is forced by making a launcher raise.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                reason='triton is not installed')

CHECK = textwrap.dedent('''
    import json
    import torch
    from vvt_mm.models.attention.vicinity_dispatch import vicinity_attention
    from vvt_mm.ops import vicinity_triton
    from vvt_mm.ops.vicinity_reference import vicinity_attention_reference
    from vvt_mm.ops.vicinity_separable import vicinity_attention_separable
    launches = []
    real_backward = vicinity_triton._launch_backward

    def counting_backward(*args):
        launches.append(1)
        return real_backward(*args)

    vicinity_triton._launch_backward = counting_backward
    gen = torch.Generator().manual_seed(0)
    cases = {
        # name: (q grid, kv grid, head dim, clamp)
        'square_clamped': ((5, 7), (5, 7), 4, True),
        'reduced_kv_unclamped': ((6, 9), (2, 3), 20, False),
        'reduced_kv_clamped': ((6, 9), (2, 3), 20, True),
    }
    errors = {}
    for name, (q_hw, kv_hw, dim, clamp) in cases.items():
        q, k, v = (torch.randn(2, 2, h * w, dim, generator=gen)
                   for h, w in (q_hw, kv_hw, kv_hw))
        if clamp:
            k[0] *= 300.0  # saturate the kv-state clamp in batch 0
            v[0] *= 300.0
            q[1, 1, :3] = -1.0  # exact zero rows stay zero
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        grad_out = torch.randn(q.shape, generator=gen)
        results = []
        for impl in ('triton', 'reference', 'torch'):
            out = vicinity_attention(q, k, v, q_hw, kv_hw, clamp=clamp, impl=impl)
            results.append((out, *torch.autograd.grad(out, (q, k, v), grad_out)))
        # Against the official formulation and against the separable torch path.
        errors[name] = [((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()
                        for ref in results[1:] for a, b in zip(results[0], ref)]
        errors[name].append(bool((results[0][0][1, 1, :3] == 0).all()) if clamp else True)
    errors['backward_launches'] = len(launches)
    errors['disabled'] = vicinity_triton.kernels_disabled()

    # A backward kernel that fails: one warning, gradients from the torch path.
    def broken(*args):
        raise RuntimeError('forced failure')

    vicinity_triton._launch_backward = broken
    import warnings
    q, k, v = (torch.randn(1, 2, 20, 8, generator=gen).requires_grad_() for _ in range(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        grads = []
        for fn in (vicinity_triton.vicinity_attention_triton, vicinity_attention_separable):
            out = fn(q, k, v, (4, 5))
            grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
        out = vicinity_triton.vicinity_attention_triton(q, k, v, (4, 5))  # already off
    errors['fallback_warnings'] = sum('Triton kernel failed' in str(w.message)
                                      for w in caught)
    errors['fallback_grad_err'] = max((a - b).abs().max().item() for a, b in zip(*grads))
    errors['disabled_after'] = vicinity_triton.kernels_disabled()
    print(json.dumps(errors))
''')


def test_triton_kernel_matches_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', CHECK], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    # The fused backward ran (once per case), and nothing fell back.
    assert errors.pop('backward_launches') == 3 and errors.pop('disabled') is None
    assert errors.pop('fallback_warnings') == 1
    assert errors.pop('fallback_grad_err') < 1e-5
    assert 'forced failure' in errors.pop('disabled_after')
    for name, (out_ref, gq_ref, gk_ref, gv_ref, out_torch, gq_torch, gk_torch, gv_torch,
               zeros_kept) in errors.items():
        assert max(out_ref, out_torch) < 1e-5, (name, 'output', out_ref, out_torch)
        assert max(gq_ref, gk_ref, gv_ref, gq_torch, gk_torch, gv_torch) < 1e-4, (
            name, 'gradients', gq_ref, gk_ref, gv_ref, gq_torch, gk_torch, gv_torch)
        assert zeros_kept, (name, 'exact zeros must stay zero')


def test_a_kernel_that_fails_warns_once_and_the_torch_path_runs(monkeypatch):
    from vvt_mm.ops import vicinity_triton
    from vvt_mm.ops.vicinity_separable import vicinity_attention_separable
    monkeypatch.setattr(vicinity_triton, '_DISABLED', [])

    def broken(*args):
        raise RuntimeError('no kernel image is available for execution on the device')

    monkeypatch.setattr(vicinity_triton, '_launch_forward', broken)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, 12, 8, generator=gen).requires_grad_() for _ in range(3))
    with pytest.warns(RuntimeWarning, match='Triton kernel failed .*no kernel image') as caught:
        out = vicinity_triton.vicinity_attention_triton(q, k, v, (3, 4))
        again = vicinity_triton.vicinity_attention_triton(q, k, v, (3, 4))
    assert sum('Triton kernel failed' in str(w.message) for w in caught) == 1
    expected = vicinity_attention_separable(q, k, v, (3, 4))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for g, e in zip(grads, torch.autograd.grad(expected.sum(), (q, k, v))):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert 'no kernel image' in vicinity_triton.kernels_disabled()
    # The dispatcher stops choosing Triton once it is off (even on CUDA).
    from vvt_mm.models.attention import vicinity_dispatch

    class FakeCuda:
        is_cuda = True

    assert not vicinity_dispatch.triton_available(FakeCuda())
    monkeypatch.setattr(vicinity_triton, '_DISABLED', [])
    assert vicinity_dispatch.triton_available(FakeCuda())
