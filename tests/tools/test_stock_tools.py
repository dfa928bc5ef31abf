"""The libraries' own entry points on checkpoints trained by our tools/train.py.

The configs name only ``custom_imports=dict(imports=['vvt_mm'])`` and our
``CheckpointSafetyHook``; the scripts are mmseg's installed ``.mim/tools``,
run outside the repository without PYTHONPATH.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def clean_env() -> dict:
    """No PYTHONPATH: only the installed vvt_mm, found by custom_imports, is importable."""
    import os
    return {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}


def stock_script(package: str, name: str) -> Path:
    module = __import__(package)
    script = Path(module.__file__).parent / '.mim' / 'tools' / name
    if not script.is_file():
        pytest.skip(f'this {package} wheel ships no {script}')
    return script


def run_stock(script: Path, args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=clean_env())
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_stock_mmseg_test_script_evaluates_our_checkpoint(upernet_trained_by_our_tools,
                                                          tmp_path):
    run = upernet_trained_by_our_tools
    output = run_stock(stock_script('mmseg', 'test.py'),
                       [str(run.config), str(run.checkpoint), '--work-dir', str(tmp_path),
                        '--cfg-options', *run.options()], tmp_path)
    assert 'Weights only load failed' not in output
    assert 'Load checkpoint from' in output and 'mIoU' in output


def test_mmseg_init_model_and_inference_model_on_our_checkpoint(
        upernet_trained_by_our_tools, tmp_path):
    from mmengine.config import Config, DictAction
    from mmseg.apis import inference_model, init_model

    run = upernet_trained_by_our_tools
    cfg = Config.fromfile(str(run.config))
    # As the tools parse --cfg-options.
    cfg.merge_from_dict({key: DictAction._parse_iterable(value) for key, value in
                         (item.split('=', 1) for item in run.options())})
    model = init_model(cfg, str(run.checkpoint), device='cpu')
    saved = torch.load(str(run.checkpoint), map_location='cpu')['state_dict']
    key = 'backbone.stages.0.patch_embed.proj.weight'
    assert torch.equal(model.state_dict()[key], saved[key])  # really loaded, not random

    image = tmp_path / 'img.png'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)).save(image)
    result = inference_model(model, str(image))
    assert tuple(result.pred_sem_seg.data.shape) == (1, 48, 72)


@pytest.mark.slow
def test_stock_mmseg_train_resumes_our_checkpoint(upernet_trained_by_our_tools, tmp_path):
    """Stock ``tools/train.py --resume`` continues at iteration 3 of our 2-iteration run."""
    import shutil
    run = upernet_trained_by_our_tools
    work = tmp_path / 'work'
    shutil.copytree(run.work_dir, work)
    # The newest file is truncated (a kill while writing): auto-resume skips it.
    (work / 'iter_3.pth').write_bytes(b'PK\x03\x04' + b'\0' * 64)
    (work / 'last_checkpoint').write_text(str(work / 'iter_3.pth'))
    output = run_stock(stock_script('mmseg', 'train.py'),
                       [str(run.config), '--work-dir', str(work), '--resume',
                        '--cfg-options', *run.options(iters=4)], tmp_path)
    assert 'Weights only load failed' not in output
    assert "auto-resume: skipping" in output and 'iter_3.pth' in output
    assert 'resumed epoch: 0, iter: 2' in output
    assert 'Iter(train) [3/4]' in output and 'Iter(train) [1/4]' not in output
    assert (work / 'iter_4.pth').is_file()
    # Written atomically by the hook: no temporary file left behind.
    assert not list(work.glob('.iter_4.pth.tmp-*'))
