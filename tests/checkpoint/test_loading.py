"""Reading checkpoints: damaged files fail loudly, unsafe ones are refused, weights load
honestly."""
from __future__ import annotations

import datetime
import pickle

import pytest
import torch
import torch.nn as nn

from vvt_mm.checkpoint import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    checkpoint_problem,
    load_pretrained,
    read_checkpoint,
)
from vvt_mm.checkpoint.loading import UNSAFE_ENV


class Net(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 16)
        self.head = nn.Linear(16, classes)


@pytest.fixture
def good(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': Net().state_dict()}, path)
    return path


def damaged(tmp_path, good, how: str):
    data = bytearray(good.read_bytes())
    if how == 'empty':
        data = b''
    elif how == 'truncated_half':
        data = data[:len(data) // 2]
    elif how == 'truncated_tail':
        data = data[:-10]
    elif how == 'html_error_page':
        data = b'<html><body>404 Not Found</body></html>'
    elif how == 'random_bytes':
        data = bytes(range(256)) * 4
    path = tmp_path / f'{how}.pth'
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize('how', ['empty', 'truncated_half', 'truncated_tail',
                                 'html_error_page', 'random_bytes'])
def test_damaged_files_raise_corrupt_checkpoint_error_naming_the_fix(tmp_path, good, how):
    path = damaged(tmp_path, good, how)
    with pytest.raises(CorruptCheckpointError) as info:
        read_checkpoint(str(path))
    first_line = str(info.value).splitlines()[0]
    assert str(path) in first_line and 're-download or re-save' in first_line


def test_flipped_byte_in_a_tensor_is_caught_although_torch_loads_it(tmp_path, good):
    data = bytearray(good.read_bytes())
    # torch stores tensors uncompressed: find fc.weight's bytes and flip one.
    fc_weight = torch.load(good, weights_only=True)['state_dict']['fc.weight']
    offset = data.find(fc_weight.numpy().tobytes())
    assert offset > 0
    data[offset + 5] ^= 0x40
    path = tmp_path / 'flipped.pth'
    path.write_bytes(bytes(data))
    # torch does not verify its zip CRCs: it returns silently different weights.
    silently = torch.load(path, weights_only=True)['state_dict']
    original = torch.load(good, weights_only=True)['state_dict']
    assert any(not torch.equal(silently[k], original[k]) for k in original)
    assert 'CRC mismatch' in checkpoint_problem(str(path))
    with pytest.raises(CorruptCheckpointError, match='CRC mismatch'):
        read_checkpoint(str(path))


def test_intact_file_reads_back_exactly(good):
    assert checkpoint_problem(str(good)) is None
    loaded = read_checkpoint(str(good))['state_dict']
    expected = torch.load(good, weights_only=True)['state_dict']
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_legacy_non_zip_checkpoints_still_load(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'w': torch.arange(4)}, path, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(str(path)) is None
    assert torch.equal(read_checkpoint(str(path))['w'], torch.arange(4))


def test_folder_and_missing_paths_get_their_own_messages(tmp_path):
    with pytest.raises(IsADirectoryError, match='is a folder'):
        read_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_checkpoint(str(tmp_path / 'nope.pth'))


def test_objects_beyond_tensors_are_refused_by_name_unless_opted_in(tmp_path, monkeypatch):
    path = tmp_path / 'pickled.pth'
    torch.save({'state_dict': {}, 'date': datetime.date(2024, 1, 1)}, path)
    with pytest.raises(UnsafeCheckpointError, match=rf'datetime\.date.*{UNSAFE_ENV}=1'):
        read_checkpoint(str(path))
    assert read_checkpoint(str(path), allow_unsafe=True)['date'].year == 2024
    monkeypatch.setenv(UNSAFE_ENV, '1')
    assert read_checkpoint(str(path))['date'].year == 2024


def test_head_shape_mismatch_is_reported_not_crashed_on(tmp_path, good):
    model = Net(classes=3)
    report = load_pretrained(model, str(good))
    assert [k for k, _, _ in report.shape_mismatch] == ['head.weight', 'head.bias']
    assert report.shape_mismatch[0][1:] == ((10, 16), (3, 16))
    assert 'shape mismatch' in report.summary()
    loaded = torch.load(good, weights_only=True)['state_dict']
    assert torch.equal(model.fc.weight, loaded['fc.weight'])


def test_wrong_prefix_or_wrong_model_raises_instead_of_training_from_scratch(tmp_path, good):
    with pytest.raises(ValueError, match="prefix 'backbone.'"):
        load_pretrained(Net(), str(good), prefix='backbone')
    other = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match='matched only 0 of 4'):
        load_pretrained(other, str(good))


def test_weights_with_nan_are_refused(tmp_path):
    state = Net().state_dict()
    state['fc.weight'][0, 0] = float('nan')
    state['head.bias'][1] = float('inf')
    path = tmp_path / 'diverged.pth'
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r'NaN/inf values in 2 tensors.*earlier checkpoint'):
        load_pretrained(Net(), str(path))


def test_checkpoint_of_an_mmengine_training_run_loads_as_pretrained(tmp_path):
    # What mmengine's Runner saves besides weights: HistoryBuffers of numpy
    # arrays and numpy scalars. torch's default weights_only refuses them.
    import numpy as np
    from mmengine.logging import HistoryBuffer

    source = Net()
    history = HistoryBuffer()
    history.update(0.5)
    path = tmp_path / 'iter_4.pth'
    torch.save({'meta': {'iter': 4, 'best': np.float64(0.25)},
                'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()},
                'message_hub': {'log_scalars': {'train/loss': history}}}, path)
    registered = torch.serialization.get_safe_globals()  # import vvt_mm added ours
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            torch.load(path, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(registered)
    model = Net()
    report = load_pretrained(model, str(path), prefix='backbone.')
    assert report.match_ratio == 1.0
    assert torch.equal(model.fc.weight, source.fc.weight)
