"""mmengine's ``compile=`` in a config trains: through tools/dist_train.sh and mmseg's train.py.

Both runs train configs/upernet_vvt_t_ade20k.py with a 1-block-per-stage VVT
at 64 px (conftest's tiny options otherwise) for 2 iterations, with
``compile`` set from the command line as a user would. The backend is
``aot_eager`` (dynamo and AOTAutograd trace and differentiate the whole
``train_step``, no code generation): inductor's C++ compile of the UPerNet
would take minutes per process on a 2-core machine. The compiled run's
losses equal an eager run's (same seed, deterministic single-threaded CPU).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vvt_mm.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
ITERS = 2
COMPILED = 'Model has been "compiled"'  # mmengine's log line once it wraps train_step

pytestmark = pytest.mark.slow


def env(**extra: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    return dict(base, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)


def losses(output: str) -> list[float]:
    """The total loss of each logged training iteration."""
    found = re.findall(r'Iter\(train\) \[\s*\d+/\d+\].*?\s loss: ([0-9.eE+-]+|nan)', output)
    assert len(found) == ITERS, output[-4000:]
    return [float(v) for v in found]


def run(cmd: list[str], cwd: Path, **extra_env: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=env(**extra_env))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory, one_block_upernet_text) -> Path:
    path = tmp_path_factory.mktemp('cfg') / 'tiny_upernet_vvt.py'
    path.write_text(one_block_upernet_text)
    return path


@pytest.fixture(scope='module')
def eager_losses(tiny_config, tiny_ade20k, upernet_options, tmp_path_factory) -> list[float]:
    work = tmp_path_factory.mktemp('eager')
    output = run([sys.executable, 'tools/train.py', str(tiny_config), '--work-dir', str(work),
                  '--cfg-options', *upernet_options(tiny_ade20k, ITERS)], ROOT)
    assert COMPILED not in output
    return losses(output)


def dist_train(config: Path, work: Path, options: list[str]) -> str:
    return run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work),
                '--cfg-options', *options], ROOT, PORT=str(free_port()), PYTHON=sys.executable)


def test_dist_train_with_compile_trains_two_processes_like_eager(
        tiny_config, tiny_ade20k, upernet_options, tmp_path):
    """``compile`` as a dict of torch.compile options, 2 gloo processes (DDP-wrapped)."""
    options = upernet_options(tiny_ade20k, ITERS)
    eager = dist_train(tiny_config, tmp_path / 'eager', options)
    output = dist_train(tiny_config, tmp_path / 'work',
                        [*options, 'compile.backend=aot_eager', 'compile.dynamic=True'])
    assert COMPILED not in eager
    assert COMPILED in output and 'Distributed training: True' in output
    assert 'GPU number: 2' in output
    # The optimizer groups the hook made plain (the config has a paramwise_cfg).
    assert 'optimizer param group(s) made plain dicts' in output
    assert losses(output) == pytest.approx(losses(eager), rel=1e-4, abs=1e-5)
    assert (tmp_path / 'work' / f'iter_{ITERS}.pth').is_file()


def test_stock_mmseg_train_with_compile_trains_like_eager(
        tiny_config, tiny_ade20k, upernet_options, eager_losses, tmp_path):
    """The installed mmseg tools/train.py, config options only: compile=True-style switch."""
    import mmseg
    script = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not script.is_file():
        pytest.skip(f'this mmseg wheel ships no {script}')
    output = run([sys.executable, str(script), str(tiny_config), '--work-dir',
                  str(tmp_path / 'work'), '--cfg-options',
                  *upernet_options(tiny_ade20k, ITERS), 'compile.backend=aot_eager'],
                 tmp_path)
    assert COMPILED in output
    assert 'optimizer param group(s) made plain dicts' in output
    got = losses(output)
    assert got == pytest.approx(eager_losses, rel=1e-4, abs=1e-5), (got, eager_losses)
