"""mmseg's own installed tools/train.py trains our config with only custom_imports."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vvt_mm.testing import make_tiny_ade20k

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_installed_mmseg_train_script_runs_our_upernet_config(tmp_path):
    import mmseg
    script = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not script.is_file():
        pytest.skip(f'this mmseg wheel ships no {script}')
    data = make_tiny_ade20k(str(tmp_path / 'ade'), num_train=4, num_val=2, height=64,
                            width=80)
    work = tmp_path / 'work'
    small = [  # the real config at 64 px crops with narrow heads, nothing else changed
        'model.backbone.init_cfg=None', 'model.data_preprocessor.size=(64,64)',
        'model.decode_head.channels=64', 'model.auxiliary_head.channels=32',
        f'train_dataloader.dataset.data_root={data}', f'val_dataloader.dataset.data_root={data}',
        'train_dataloader.dataset.pipeline.2.scale=(128,64)',
        'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
        'val_dataloader.dataset.pipeline.1.scale=(128,64)',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=4',
    ]
    # Run outside the repository and without PYTHONPATH: only the installed vvt_mm,
    # found through the config's custom_imports, provides the backbone.
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(
        [sys.executable, str(script), str(ROOT / 'configs' / 'upernet_vvt_t_ade20k.py'),
         '--work-dir', str(work), '--cfg-options', *small],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert 'Iter(train) [4/4]' in output and 'mIoU' in output
    assert (work / 'iter_4.pth').is_file()
