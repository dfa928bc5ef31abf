"""A process killed while writing a checkpoint leaves no truncated file under its name.

The kill is real (SIGKILL of a subprocess) and happens after half of the new
checkpoint's bytes reached the file: for mmengine's own writer we cut its one
``write`` call in half, for ours we cut the serialiser's output in half. The
first shows the failure mode (and that it is detected), the second that the
previous checkpoint survives intact.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mmengine.runner as mm_runner_pkg
import pytest
import torch
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner import runner as mm_runner

from vvt_mm.checkpoint import CorruptCheckpointError, checkpoint_problem, read_checkpoint
from vvt_mm.engine import atomic_save, atomic_save_checkpoint, enable_atomic_checkpoints

ROOT = Path(__file__).resolve().parents[2]

# Saves OLD (complete), then NEW, dying by SIGKILL after half of NEW's bytes.
KILL_DURING_SAVE = textwrap.dedent('''
    import io, os, signal, sys
    import torch
    from mmengine.fileio import LocalBackend
    from mmengine.runner import checkpoint as mm_checkpoint
    from vvt_mm.engine import enable_atomic_checkpoints

    path, atomic = sys.argv[1], sys.argv[2] == 'atomic'
    old = {'state_dict': {'w': torch.zeros(256, 256)}, 'meta': {'iter': 4}}
    new = {'state_dict': {'w': torch.ones(256, 256)}, 'meta': {'iter': 8}}
    if atomic:
        enable_atomic_checkpoints()
    mm_checkpoint.save_checkpoint(old, path)

    def die_halfway(data, f):
        f.write(data[:len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if atomic:
        def torch_save(obj, f):  # the serialiser atomic_save calls
            buf = io.BytesIO()
            real_save(obj, buf)
            die_halfway(buf.getvalue(), f)
        real_save, torch.save = torch.save, torch_save
    else:
        def put(self, obj, filepath):  # mmengine writes the whole file in one call
            with open(filepath, 'wb') as f:
                die_halfway(obj, f)
        LocalBackend.put = put
    mm_checkpoint.save_checkpoint(new, path)
    print('not killed')
''')


def kill_during_save(path: Path, mode: str) -> None:
    proc = subprocess.run([sys.executable, '-c', KILL_DURING_SAVE, str(path), mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


def test_killed_mmengine_save_truncates_the_file_and_we_detect_it(tmp_path):
    path = tmp_path / 'iter_8.pth'
    kill_during_save(path, 'plain')
    assert 'truncated' in checkpoint_problem(str(path))
    with pytest.raises(CorruptCheckpointError, match='corrupted or truncated'):
        read_checkpoint(str(path))


def test_killed_atomic_save_keeps_the_previous_complete_checkpoint(tmp_path):
    path = tmp_path / 'iter_8.pth'
    kill_during_save(path, 'atomic')
    assert checkpoint_problem(str(path)) is None
    survivor = read_checkpoint(str(path))
    assert survivor['meta']['iter'] == 4
    assert torch.equal(survivor['state_dict']['w'], torch.zeros(256, 256))
    # The half-written temporary is hidden and not a *.pth that resume would pick.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != 'iter_8.pth']
    assert len(leftovers) == 1 and leftovers[0].startswith('.iter_8.pth.tmp-')
    assert not leftovers[0].endswith('.pth')
    # The next save from a live process removes the dead writer's leftover.
    atomic_save({'meta': {'iter': 12}}, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_8.pth']
    assert read_checkpoint(str(path))['meta']['iter'] == 12


def test_failed_serialisation_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    atomic_save({'a': torch.arange(3)}, str(path))

    def failing_writer(obj, f):
        f.write(b'PK partial')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save({'a': torch.arange(5)}, str(path), writer=failing_writer)
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']
    assert torch.equal(read_checkpoint(str(path))['a'], torch.arange(3))


def test_atomic_file_keeps_the_umask_permissions_of_a_plain_write(tmp_path):
    atomic_save({'a': torch.zeros(1)}, str(tmp_path / 'atomic.pth'))
    torch.save({'a': torch.zeros(1)}, tmp_path / 'plain.pth')
    assert (tmp_path / 'atomic.pth').stat().st_mode == (tmp_path / 'plain.pth').stat().st_mode


def test_enable_replaces_every_name_mmengine_saves_through(tmp_path, monkeypatch):
    for module in (mm_checkpoint, mm_runner_pkg, mm_runner):
        monkeypatch.setattr(module, 'save_checkpoint', module.save_checkpoint)
    monkeypatch.setattr('vvt_mm.engine.atomic_checkpoint._original_save', None)
    enable_atomic_checkpoints()
    enable_atomic_checkpoints()  # idempotent
    for module in (mm_checkpoint, mm_runner_pkg, mm_runner):
        assert module.save_checkpoint is atomic_save_checkpoint
    # The CheckpointHook's published-model path imports it from the package.
    from mmengine.runner import save_checkpoint
    save_checkpoint({'meta': {'iter': 1}, 'w': torch.ones(2)}, str(tmp_path / 'x.pth'))
    assert torch.equal(read_checkpoint(str(tmp_path / 'x.pth'))['w'], torch.ones(2))
    assert os.listdir(tmp_path) == ['x.pth']
