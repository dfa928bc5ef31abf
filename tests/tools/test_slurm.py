"""tools/slurm_{train,test}.sh keep the OpenMMLab contract (checked with a fake srun)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_with_fake_srun(tmp_path: Path, script: str, args: list[str], env: dict) -> list[str]:
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    record = tmp_path / 'srun_args'
    fake = bin_dir / 'srun'
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    base = {k: v for k, v in os.environ.items()
            if k not in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'PYTHON')}
    proc = subprocess.run(['bash', str(ROOT / 'tools' / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env=dict(base, PATH=f'{bin_dir}:{os.environ["PATH"]}', **env))
    assert proc.returncode == 0, proc.stderr
    return record.read_text().splitlines()


def test_slurm_train_passes_partition_tasks_and_extra_args(tmp_path):
    argv = run_with_fake_srun(
        tmp_path, 'slurm_train.sh',
        ['gpu', 'vvt', 'configs/upernet_vvt_s_ade20k.py', '--work-dir', 'w d', '--amp'],
        dict(GPUS='16', GPUS_PER_NODE='8', SRUN_ARGS='--quotatype=auto'))
    assert argv[:2] == ['-p', 'gpu']
    for flag in ('--job-name=vvt', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
                 '--cpus-per-task=5', '--kill-on-bad-exit=1', '--quotatype=auto'):
        assert flag in argv
    cmd = argv[argv.index('-u') + 1:]
    assert cmd == [str(ROOT / 'tools' / 'train.py'), 'configs/upernet_vvt_s_ade20k.py',
                   '--launcher=slurm', '--work-dir', 'w d', '--amp']


def test_slurm_test_defaults_to_8_gpus_and_passes_the_checkpoint(tmp_path):
    argv = run_with_fake_srun(tmp_path, 'slurm_test.sh',
                              ['p', 'j', 'configs/vvt_s_in1k.py', 'ckpt.pth', '--eval', 'x'],
                              {})
    assert '--ntasks=8' in argv and '--gres=gpu:8' in argv
    cmd = argv[argv.index('-u') + 1:]
    assert cmd == [str(ROOT / 'tools' / 'test.py'), 'configs/vvt_s_in1k.py', 'ckpt.pth',
                   '--launcher=slurm', '--eval', 'x']


@pytest.mark.parametrize('script,args', [('slurm_train.sh', ['p', 'j']),
                                         ('slurm_test.sh', ['p', 'j', 'c.py'])])
def test_missing_positional_arguments_print_the_usage(script, args):
    proc = subprocess.run(['bash', str(ROOT / 'tools' / script), *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and 'usage:' in proc.stderr
