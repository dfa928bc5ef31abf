"""The fused Triton forward (and its autograd fallback) equals the reference.

Runs on CPU through Triton's interpreter. ``TRITON_INTERPRET`` is read when
Triton is imported, so the check runs in a fresh interpreter process.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                reason='triton is not installed')

CHECK = textwrap.dedent('''
    import json
    import torch
    from vvt_mm.models.attention.vicinity_dispatch import vicinity_attention
    from vvt_mm.ops.vicinity_reference import vicinity_attention_reference
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
        for impl in ('triton', 'reference'):
            out = vicinity_attention(q, k, v, q_hw, kv_hw, clamp=clamp, impl=impl)
            results.append((out, *torch.autograd.grad(out, (q, k, v), grad_out)))
        errors[name] = [((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()
                        for a, b in zip(*results)]
        errors[name].append(bool((results[0][0][1, 1, :3] == 0).all()) if clamp else True)
    print(json.dumps(errors))
''')


def test_triton_kernel_matches_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', CHECK], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (out_err, gq, gk, gv, zeros_kept) in errors.items():
        assert out_err < 1e-5, (name, 'output', out_err)
        assert max(gq, gk, gv) < 1e-4, (name, 'gradients', gq, gk, gv)
        assert zeros_kept, (name, 'exact zeros must stay zero')
