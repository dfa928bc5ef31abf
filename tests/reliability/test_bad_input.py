"""Bad input gets an error that names the problem and the fix, raised by our checks.

Each case asserts the exception type, that its message says what is wrong and
what to do, and that it is raised from vvt_mm code (the innermost traceback
frame is in the package), not from deep inside torch. ``pytest -s`` prints the
first line of every message (the list in the issue 6 note).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vvt_mm.checkpoint import CorruptCheckpointError
from vvt_mm.models.backbones.vvt import VVT

PACKAGE = Path(__file__).resolve().parents[2] / 'vvt_mm'
TINY = dict(embed_dims=[8, 16, 16, 16], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
            mlp_ratios=[2, 2, 2, 2])


def raised_by_us(info: pytest.ExceptionInfo, case: str) -> str:
    innermost = Path(str(info.traceback[-1].path)).resolve()
    assert PACKAGE in innermost.parents, f'{case}: raised from {innermost}'
    first = str(info.value).splitlines()[0]
    print(f'\n{case} -> {info.type.__name__}: {first}')
    return first


def test_wrong_arch_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        VVT(arch='huge')
    first = raised_by_us(info, 'wrong arch')
    assert "unknown arch 'huge'" in first and "'small'" in first and 'dict with keys' in first


def test_custom_arch_missing_keys_names_them():
    with pytest.raises(ValueError) as info:
        VVT(arch=dict(embed_dims=[8] * 4, depths=[1] * 4))
    first = raised_by_us(info, 'custom arch without num_heads')
    assert "lacks ['mlp_ratios', 'num_heads']" in first


def test_unknown_attention_type_lists_the_registered_ones():
    with pytest.raises(ValueError) as info:
        VVT(arch=TINY, attn_cfg=dict(type='flash'))
    first = raised_by_us(info, 'unknown attn_cfg type')
    assert "unknown attention type 'flash'" in first and "'vicinity'" in first


def test_out_indices_out_of_range_names_the_valid_range():
    with pytest.raises(ValueError) as info:
        VVT(arch=TINY, out_indices=(0, 4))
    first = raised_by_us(info, 'out_indices out of range')
    assert 'has 4, out of range for 4 stages' in first and '0..3' in first


@pytest.fixture(scope='module')
def model():
    return VVT(arch=TINY).eval()


@pytest.mark.parametrize('case, x, error, expected', [
    ('wrong channel count', torch.zeros(1, 1, 64, 64), ValueError,
     ('built for 3-channel input but got 1 channels', 'in_channels=1')),
    ('image smaller than the total stride', torch.zeros(1, 3, 64, 16), ValueError,
     ('at least 32x32 (its total stride), got 64x16', 'resize or pad')),
    ('non-float (uint8) input', torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError,
     ('floating-point image, got torch.uint8', 'x.float()')),
    ('missing batch dimension', torch.zeros(3, 64, 64), ValueError,
     ('NCHW batch (4 dims), got shape (3, 64, 64)', 'x[None]')),
    ('not a tensor', [[0.0]], TypeError, ('expects a torch.Tensor', )),
])
def test_bad_images_fail_before_reaching_torch(model, case, x, error, expected):
    with pytest.raises(error) as info:
        model(x)
    first = raised_by_us(info, case)
    for part in expected:
        assert part in first


def test_truncated_pretrained_checkpoint_is_named_with_the_fix(tmp_path):
    source = VVT(arch=TINY)
    path = tmp_path / 'vvt_tiny.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
    model = VVT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CorruptCheckpointError) as info:
        model.init_weights()
    first = raised_by_us(info, 'truncated checkpoint')
    assert 'is corrupted or truncated' in first and 're-download or re-save' in first


def test_missing_pretrained_checkpoint_points_at_the_config_key(tmp_path):
    model = VVT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'x.pth')))
    with pytest.raises(FileNotFoundError) as info:
        model.init_weights()
    first = raised_by_us(info, 'missing checkpoint')
    assert 'does not exist' in first and "init_cfg=dict(type='Pretrained'" in first
