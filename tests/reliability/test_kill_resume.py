"""SIGKILL a training run between checkpoints, ``--resume`` it, compare with an uninterrupted run.

Three ``tools/train.py`` processes on the tiny VVT classifier of
``data/tiny_vvt_cls.py`` (12 iterations, checkpoint every 4, AdamW + warmup/cosine):

A. uninterrupted reference;
B. the same run, parked after iteration 6 by ``PauseForKillHook`` and SIGKILLed
   (so ``iter_4.pth`` is the last checkpoint, iterations 5-6 are lost work);
C. ``tools/train.py --resume`` (no path: auto-resume) in B's work dir.

C must start at iteration 5 from ``iter_4.pth``, under torch's default
``weights_only=True``, and its per-iteration losses, learning rates, final
weights and optimizer/scheduler state must equal A's.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vvt_mm.checkpoint.safe_globals import allow_mmengine_globals
from vvt_mm.testing import logged_scalars, max_tensor_diff

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = HERE / 'data' / 'tiny_vvt_cls.py'
INTERVAL, KILL_AFTER, MAX_ITERS = 4, 6, 12


def make_image_folders(root: Path) -> None:
    """Two classes of 32x32 images (dark vs bright), ImageNet-style folders."""
    rng = np.random.default_rng(0)
    for cls in range(2):
        (root / f'class{cls}').mkdir(parents=True)
        for i in range(8):
            image = (rng.random((32, 32, 3)) * 100 + cls * 120).astype(np.uint8)
            Image.fromarray(image).save(root / f'class{cls}' / f'{i}.png')


def train_cmd(config: Path, work_dir: Path, data_root: Path, *extra: str) -> list[str]:
    return [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir),
            *extra, '--cfg-options', f'train_dataloader.dataset.data_root={data_root}']


def env() -> dict:
    # One thread per process: deterministic reductions and no oversubscription
    # while A and B run side by side; kill_helpers importable by B.
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')]))


def load(path: Path) -> dict:
    with allow_mmengine_globals():
        return torch.load(path, map_location='cpu', weights_only=True)


def test_sigkilled_run_resumes_from_last_checkpoint_with_identical_losses(tmp_path):
    data_root = tmp_path / 'data'
    make_image_folders(data_root)
    marker = tmp_path / 'paused_at'
    killable = tmp_path / 'killable.py'
    killable.write_text(
        f"_base_ = [{str(CONFIG)!r}]\n"
        "custom_imports = dict(imports=['vvt_mm', 'kill_helpers'], allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='PauseForKillHook', after_iter={KILL_AFTER}, "
        f"marker={str(marker)!r})]\n")
    dir_a, dir_b = tmp_path / 'uninterrupted', tmp_path / 'killed'

    run_a = subprocess.Popen(train_cmd(CONFIG, dir_a, data_root), cwd=ROOT, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_b = subprocess.Popen(train_cmd(killable, dir_b, data_root), cwd=ROOT, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert run_b.poll() is None, run_b.communicate()[0][-3000:]
            assert time.monotonic() < deadline, 'run B never reached the kill point'
            time.sleep(0.05)
        run_b.send_signal(signal.SIGKILL)
        run_b.wait(timeout=60)
        assert run_b.returncode == -signal.SIGKILL
        out_a = run_a.communicate(timeout=240)[0]
        assert run_a.returncode == 0, out_a[-3000:]
    finally:
        for proc in (run_a, run_b):
            if proc.poll() is None:
                proc.kill()

    # State at the kill: iterations 1..6 ran, the last checkpoint is iter_4.
    assert int(marker.read_text()) == KILL_AFTER
    assert sorted(p.name for p in dir_b.glob('*.pth')) == ['iter_4.pth']
    assert load(dir_b / 'iter_4.pth')['meta']['iter'] == INTERVAL

    runs_before = set(dir_b.glob('2*'))
    proc = subprocess.run(train_cmd(CONFIG, dir_b, data_root, '--resume'), cwd=ROOT,
                          env=env(), capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert 'Weights only load failed' not in output
    (run_c, ) = set(dir_b.glob('2*')) - runs_before

    ref = logged_scalars(next(dir_a.glob('2*')))
    resumed = logged_scalars(run_c)
    assert sorted(ref) == list(range(1, MAX_ITERS + 1))
    # Resumed at the iteration after the checkpoint: nothing lost beyond the
    # checkpoint interval, nothing run twice in the log.
    assert sorted(resumed) == list(range(INTERVAL + 1, MAX_ITERS + 1))
    assert KILL_AFTER - INTERVAL < INTERVAL

    loss_diff = max(abs(resumed[i]['loss'] - ref[i]['loss']) for i in resumed)
    lr_diff = max(abs(resumed[i]['lr'] - ref[i]['lr']) for i in resumed)
    print(f'\nkill-and-resume: killed after iter {KILL_AFTER}, resumed from iter '
          f'{INTERVAL}, iterations lost beyond the checkpoint: 0; max |loss diff| vs '
          f'uninterrupted over iters {INTERVAL + 1}-{MAX_ITERS}: {loss_diff:.3g}; '
          f'max |lr diff|: {lr_diff:.3g}')
    assert loss_diff <= 1e-6
    assert lr_diff <= 1e-12
    # Losses move (the comparison is not between constants).
    assert ref[MAX_ITERS]['loss'] < ref[1]['loss'] - 0.05

    final_a, final_c = load(dir_a / 'iter_12.pth'), load(dir_b / 'iter_12.pth')
    assert final_c['meta']['iter'] == final_a['meta']['iter'] == MAX_ITERS
    assert max_tensor_diff(final_a['state_dict'], final_c['state_dict']) <= 1e-6
    assert max_tensor_diff(final_a['optimizer']['state'], final_c['optimizer']['state']) <= 1e-6
    assert final_a['optimizer']['state'], 'AdamW state must be non-empty'
    sched_a = [{k: v for k, v in s.items() if k != '_get_lr_called_within_step'}
               for s in final_a['param_schedulers']]
    sched_c = [{k: v for k, v in s.items() if k != '_get_lr_called_within_step'}
               for s in final_c['param_schedulers']]
    assert max_tensor_diff(sched_a, sched_c) <= 1e-12
