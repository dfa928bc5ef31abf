"""The README's main job: 2-process dist_train.sh + dist_test.sh on generated data."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vvt_mm.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_trains_and_evaluates_with_two_processes(tmp_path):
    work_dir = tmp_path / 'qs'
    proc = subprocess.run(
        [sys.executable, 'tools/quickstart.py', '--work-dir', str(work_dir), '--iters', '4',
         '--port', str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PYTHONUNBUFFERED='1'))
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]
    # The launchers' full output is in the work dir, the console shows a summary.
    output = (work_dir / 'train.log').read_text() + (work_dir / 'test.log').read_text()
    # Two ranks really ran, for training and for testing (gloo on CPU, DDP-wrapped).
    # (mmengine's environment summary: world size and launcher of each run).
    assert output.count('GPU number: 2') == 2, output[-3000:]
    assert output.count('Distributed training: True') == 2
    assert 'distributed pytorch launch on CPU with gloo' in output
    assert (work_dir / 'iter_4.pth').is_file()
    # The metric table printed by tools/test.py.
    match = re.search(r'^mIoU\s+([0-9.]+)$', output, re.M)
    assert match, output[-3000:]
    assert 0.0 <= float(match.group(1)) <= 100.0

    # A person can read the console: progress, then the metrics and one row per
    # class that occurs in the data (4 classes), no config dumps or nan tables.
    lines = console.splitlines()
    assert len(lines) < 40, console
    assert 'nan' not in console and 'Config:' not in console
    assert any(re.match(r'^  train +4/4  loss \d', line) for line in lines), console
    summary = [line for line in lines if line.startswith('result (validation split): ')]
    assert len(summary) == 1 and f'mIoU {float(match.group(1)):.2f}' in summary[0]
    assert re.search(r'\(the [1-4] classes in the data\)', console), console

    # README's tools/infer.py example runs on what the quickstart left behind.
    readme = (ROOT / 'README.md').read_text()
    command = re.search(r'^\.venv/bin/python (tools/infer\.py .*?)$', readme.replace('\\\n', ''),
                        re.M | re.S).group(1).split()
    args = [a.replace('work_dirs/quickstart', str(work_dir)).replace('iter_40', 'iter_4')
            for a in command[1:]]
    args = [a.replace('seg.png', str(tmp_path / 'seg.png')) for a in args]
    infer = subprocess.run([sys.executable, 'tools/infer.py', *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert infer.returncode == 0, infer.stdout + infer.stderr
    assert (tmp_path / 'seg.png').is_file()


def test_train_reports_a_missing_config_clearly():
    proc = subprocess.run([sys.executable, 'tools/train.py', 'configs/no_such_config.py'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "config file 'configs/no_such_config.py' does not exist" in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_dist_scripts_keep_the_mm_contract():
    for name, positional in (('dist_train.sh', 'CONFIG=$1\nGPUS=$2'),
                             ('dist_test.sh', 'CONFIG=$1\nCHECKPOINT=$2\nGPUS=$3')):
        text = (ROOT / 'tools' / name).read_text()
        assert positional in text
        for var in ('NNODES', 'NODE_RANK', 'PORT', 'MASTER_ADDR'):
            assert f'{var}=${{{var}:-' in text
        assert '--launcher pytorch' in text
