"""A sample that fails to load names its dataset, index, files and the failing transform,
in the main process (num_workers=0) and from DataLoader workers (num_workers=2)."""
from __future__ import annotations

import copy
import itertools
import pickle
import shutil
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from vvt_mm.engine import SampleLoadError, SamplePipeline, enable_sample_error_context

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'upernet_vvt_t_ade20k.py'


@pytest.fixture(scope='module')
def train_dataloader_cfg():
    """The config's training dataloader at 64 px (as conftest's small_upernet_options)."""
    cfg = Config.fromfile(str(CONFIG)).train_dataloader
    cfg.dataset.pipeline[2].scale = (128, 64)
    cfg.dataset.pipeline[3].crop_size = (64, 64)
    return cfg


def corrupt_copy(src: str, dst: Path, which: str) -> Path:
    """A copy of the tiny ADE20K with one bad image (``'image'``) or label map (``'label'``)."""
    shutil.copytree(src, dst)
    folder, suffix = ('images', '.jpg') if which == 'image' else ('annotations', '.png')
    bad = sorted((dst / folder / 'training').glob(f'*{suffix}'))[1]
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really an image' * 10)
    return bad


def first_batches(cfg, data_root: Path, num_workers: int):
    cfg = copy.deepcopy(cfg)
    cfg.update(num_workers=num_workers, persistent_workers=False, batch_size=1)
    cfg.dataset.data_root = str(data_root)
    enable_sample_error_context()
    init_default_scope('mmseg')
    loader = Runner.build_dataloader(cfg, seed=0)
    # 4 training images: one pass over them meets the bad one.
    return list(itertools.islice(loader, 4))


@pytest.mark.parametrize('num_workers', [0, 2])
@pytest.mark.parametrize('which,transform', [('image', 'LoadImageFromFile'),
                                             ('label', 'LoadAnnotations')])
def test_a_corrupt_file_is_named_with_its_sample(tmp_path, tiny_ade20k, train_dataloader_cfg,
                                                 num_workers, which, transform):
    bad = corrupt_copy(tiny_ade20k, tmp_path / 'data', which)
    with pytest.raises(SampleLoadError) as err:
        first_batches(train_dataloader_cfg, tmp_path / 'data', num_workers)
    summary = err.value.summary
    assert summary.startswith('sample 1 of ADE20KDataset (img_path='), summary
    assert repr(str(bad)) in summary and f'{transform} failed: ' in summary
    assert '\n' not in summary
    if num_workers:
        assert summary.endswith(')') and 'DataLoader worker process' in summary
        assert 'Caught SampleLoadError' in str(err.value)  # the worker traceback is kept


def test_the_wrapper_keeps_the_pipeline_interface_and_pickles(tiny_ade20k,
                                                             train_dataloader_cfg):
    enable_sample_error_context()
    init_default_scope('mmseg')
    cfg = copy.deepcopy(train_dataloader_cfg)
    cfg.dataset.data_root = tiny_ade20k
    cfg.update(num_workers=0, persistent_workers=False)
    dataset = Runner.build_dataloader(cfg, seed=0).dataset
    assert isinstance(dataset.pipeline, SamplePipeline)
    assert type(dataset.pipeline.transforms[0]).__name__ == 'LoadImageFromFile'
    clone = pickle.loads(pickle.dumps(dataset.pipeline))  # what a spawned worker gets
    assert clone(dataset.get_data_info(0))['inputs'].shape[0] == 3
    assert SamplePipeline(lambda data: None, 'X')({'img_path': 'a.jpg'}) is None
