"""mmengine checkpoints load under ``weights_only=True`` with a minimal allowlist.

The checkpoint under test is written by a real mmengine ``Runner`` (toy model,
2 iterations), so the allowlist is checked against what mmengine really
pickles, not against our own idea of it.
"""
from __future__ import annotations

import logging
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

from vvt_mm.checkpoint import CorruptCheckpointError, UnsafeCheckpointError
from vvt_mm.checkpoint.safe_globals import allow_mmengine_globals
from vvt_mm.engine import (
    MMENGINE_CHECKPOINT_GLOBALS,
    enable_safe_resume,
    find_resumable_checkpoint,
    mmengine_safe_globals,
)


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='loss'):
        loss = (self.linear(inputs).squeeze(1) - targets).pow(2).mean()
        return dict(loss=loss) if mode == 'loss' else [loss]


class ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([float(i), 1.]), targets=torch.tensor(float(i)))


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
    """A work dir holding iter_1.pth and iter_2.pth saved by mmengine's Runner."""
    root = tmp_path_factory.mktemp('runner')
    runner = Runner(
        model=ToyModel(), work_dir=str(root),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler'),
                              batch_size=4, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.1)),
        param_scheduler=dict(type='LinearLR', by_epoch=False, begin=0, end=2),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)),
        log_level=logging.WARNING, experiment_name=f'safe_resume_{id(root)}')
    runner.train()
    return root


def plain_torch_load(path, import_vvt_mm: bool) -> subprocess.CompletedProcess:
    """``torch.load(path)`` with torch's defaults in a fresh interpreter."""
    code = ('import torch\n' + ('import vvt_mm\n' if import_vvt_mm else '')
            + f'ckpt = torch.load({str(path)!r})\nprint("iter", ckpt["meta"]["iter"])')
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)


def test_plain_torch_load_refuses_mmengine_checkpoints(work_dir):
    # The problem being fixed: torch >= 2.6 defaults to weights_only=True.
    proc = plain_torch_load(work_dir / 'iter_2.pth', import_vvt_mm=False)
    assert proc.returncode != 0 and 'HistoryBuffer' in proc.stderr


def test_import_vvt_mm_lets_plain_torch_load_read_them_weights_only(work_dir):
    """What mmengine's load_checkpoint (stock tools, mmseg's init_model) relies on."""
    proc = plain_torch_load(work_dir / 'iter_2.pth', import_vvt_mm=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'iter 2' in proc.stdout


def test_scoped_allowlists_keep_the_process_wide_one(work_dir):
    # torch's safe_globals() context removes its globals on exit, even ones that
    # were registered before; ours only adds what is missing.
    with allow_mmengine_globals():
        pass
    assert torch.load(work_dir / 'iter_2.pth', weights_only=True)['meta']['iter'] == 2


def test_allowlist_is_exactly_the_globals_mmengine_pickles(work_dir):
    # Asked with an empty allowlist (import vvt_mm registered ours process-wide).
    registered = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(
            work_dir / 'iter_2.pth'))
    finally:
        torch.serialization.add_safe_globals(registered)
    assert found == set(MMENGINE_CHECKPOINT_GLOBALS)
    named = {f'{g.__module__}.{g.__qualname__}' if not isinstance(g, tuple) else g[1]
             for g in mmengine_safe_globals()}
    assert found <= named


def test_allowlisted_load_restores_the_message_hub_history(work_dir):
    with allow_mmengine_globals():
        ckpt = torch.load(work_dir / 'iter_2.pth', weights_only=True)
    assert ckpt['meta']['iter'] == 2
    losses = ckpt['message_hub']['log_scalars']['train/loss']
    assert len(losses.data[0]) == 2 and np.isfinite(losses.mean())
    assert ckpt['optimizer']['state'] and ckpt['param_schedulers']


def test_enabled_mmengine_loader_resumes_its_checkpoints(work_dir):
    enable_safe_resume()
    enable_safe_resume()  # idempotent
    ckpt = CheckpointLoader.load_checkpoint(str(work_dir / 'iter_1.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 1


def test_crafted_getattr_cannot_reach_beyond_history_buffer(tmp_path):
    # mmengine pickles HistoryBuffer.min as getattr(HistoryBuffer, 'min'). With the
    # real builtins.getattr allowlisted, a file could fetch any attribute of any
    # allowlisted object (torch still refuses to *call* it: defence in depth).
    class Exploit:
        def __reduce__(self):
            return getattr, (np.ndarray, 'tofile')

    path = tmp_path / 'evil.pth'
    torch.save({'x': Exploit()}, path)
    # The real getattr, allowed in a fresh interpreter (no vvt_mm stand-in there).
    code = ('import numpy as np, torch\n'
            'with torch.serialization.safe_globals([np.ndarray, getattr]):\n'
            f'    print(torch.load({str(path)!r}, weights_only=True)["x"] is np.ndarray.tofile)')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip() == 'True', proc.stderr[-2000:]
    with allow_mmengine_globals():
        with pytest.raises(pickle.UnpicklingError, match=r"getattr.*'tofile'"):
            torch.load(path, weights_only=True)


def test_unknown_object_in_a_checkpoint_is_refused_by_name(tmp_path):
    enable_safe_resume()
    path = tmp_path / 'iter_3.pth'
    torch.save({'meta': {'when': __import__('datetime').date(2024, 1, 1)}}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'datetime\.date.*VVT_MM_ALLOW_UNSAFE'):
        CheckpointLoader.load_checkpoint(str(path))


def test_truncated_resume_file_names_the_intact_ones(work_dir, tmp_path):
    enable_safe_resume()
    shutil.copy(work_dir / 'iter_1.pth', tmp_path / 'iter_1.pth')
    data = (work_dir / 'iter_2.pth').read_bytes()
    (tmp_path / 'iter_2.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptCheckpointError,
                       match=r'truncated.*Intact checkpoints.*iter_1\.pth.*--resume'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'iter_2.pth'))


def test_missing_resume_file_says_how_to_resume(tmp_path):
    enable_safe_resume()
    with pytest.raises(FileNotFoundError, match='--resume'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'iter_9.pth'))


def _work_dir_with(tmp_path, source, names):
    for name in names:
        shutil.copy(source / 'iter_2.pth', tmp_path / name)
    return tmp_path


def test_auto_resume_follows_an_intact_last_checkpoint(work_dir, tmp_path):
    _work_dir_with(tmp_path, work_dir, ['iter_9.pth', 'iter_10.pth'])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_9.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_9.pth')


@pytest.mark.parametrize('pointer', ['', 'missing', 'truncated'])
def test_auto_resume_skips_a_bad_last_checkpoint(work_dir, tmp_path, pointer):
    # Numeric order: iter_10 is newer than iter_9 (not lexicographic).
    _work_dir_with(tmp_path, work_dir, ['iter_9.pth', 'iter_10.pth', 'iter_11.pth'])
    data = (tmp_path / 'iter_11.pth').read_bytes()
    (tmp_path / 'iter_11.pth').write_bytes(data[:-100])
    named = {'': '', 'missing': str(tmp_path / 'iter_12.pth'),
             'truncated': str(tmp_path / 'iter_11.pth')}[pointer]
    (tmp_path / 'last_checkpoint').write_text(named)
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_10.pth')


def test_auto_resume_with_nothing_to_resume_starts_fresh(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path)) is None
    assert find_resumable_checkpoint(str(tmp_path / 'not_created_yet')) is None
