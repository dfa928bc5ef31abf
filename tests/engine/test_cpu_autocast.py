"""``--amp`` without CUDA trains under bf16 autocast instead of crashing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vvt_mm.engine import CPUAutocastOptimWrapper

ROOT = Path(__file__).resolve().parents[2]


def test_forward_runs_in_bf16_and_the_step_updates_fp32_weights():
    model = nn.Linear(4, 3)
    wrapper = CPUAutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().pow(2).mean())
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)


def test_loss_scale_is_refused_with_the_reason():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match='needs no loss scaling'):
        CPUAutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                loss_scale='dynamic')


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path of --amp')
def test_train_tool_amp_on_cpu_trains_in_bf16(tiny_ade20k, upernet_options, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'),
         str(ROOT / 'configs' / 'upernet_vvt_t_ade20k.py'), '--amp', '--work-dir',
         str(tmp_path / 'w'), '--cfg-options', *upernet_options(tiny_ade20k, 2)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert '--amp without CUDA: training under bf16 autocast' in output
    assert 'AmpOptimizerWrapper is only available' not in output
    assert 'Iter(train) [2/2]' in output and (tmp_path / 'w' / 'iter_2.pth').is_file()
