"""Bad input gets an error that names the problem and the fix, raised by our checks.

Each case asserts the exception type, that its message says what is wrong and
what to do, and that it is raised from vvt_mm code (the innermost traceback
frame is in the package), not from deep inside torch. ``pytest -s`` prints the
first line of every message.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vvt_mm.checkpoint import CorruptCheckpointError
from vvt_mm.models.backbones import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'vvt_mm'
TINY = dict(embed_dims=[8, 16, 16, 16], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
            mlp_ratios=[2, 2, 2, 2])
# A tiny custom arch of every backbone.
TINY_ARCHS = {
    VVT: TINY,
    LocalViT: dict(embed_dims=8, num_heads=2, depth=1, mlp_ratio=2, se_reduction=4),
    LocalViTPVT: dict(embed_dims=[4, 8, 8, 16], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
                      mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1]),
    LVT: dict(embed_dims=[4, 4, 6, 8], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
              mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1],
              mixers=['csa', 'rasa', 'rasa', 'rasa']),
    ViTAEv2VSA: dict(embed_dims=[4, 4, 8, 8], token_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                     nc_heads=[1, 2, 2, 2], rc_heads=[1, 1, 2, 2], nc_groups=[1, 2, 2, 4],
                     rc_groups=[1, 2, 2, 2], wide_pcm=False),
}


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


@pytest.mark.parametrize('backbone, short, expected', [
    (VVT, dict(embed_dims=[8, 16, 16]),
     'VVT: arch embed_dims has 3 entries, depths has 4; give each of depths, embed_dims, '
     'mlp_ratios, num_heads one value per stage'),
    (LocalViTPVT, dict(sr_ratios=[4, 2, 1]),
     'LocalViTPVT: arch sr_ratios has 3 entries, depths has 4'),
    (LVT, dict(mixers=['csa', 'rasa']), 'LVT: arch mixers has 2 entries, depths has 4'),
    (ViTAEv2VSA, dict(depths=[1, 1, 1]),
     'ViTAEv2VSA has 4 stages but arch depths has 3 entries; each of'),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_custom_arch_lists_of_different_lengths_name_the_lengths(backbone, short, expected):
    with pytest.raises(ValueError) as info:
        backbone(arch=dict(TINY_ARCHS[backbone], **short))
    first = raised_by_us(info, f'{backbone.__name__} arch lists differ in length')
    assert expected in first and 'per stage' in first


def test_custom_arch_scalar_where_a_list_belongs_says_so():
    with pytest.raises(TypeError) as info:
        VVT(arch=dict(TINY, num_heads=1))
    first = raised_by_us(info, 'arch scalar instead of a per-stage list')
    assert 'arch num_heads must be a list with one value per stage, got 1' in first


def test_unknown_attention_type_lists_the_registered_ones():
    with pytest.raises(ValueError) as info:
        VVT(arch=TINY, attn_cfg=dict(type='flash'))
    first = raised_by_us(info, 'unknown attn_cfg type')
    assert "unknown attention type 'flash'" in first and "'vicinity'" in first


def test_attention_type_as_a_bare_string_gets_the_dict_to_write():
    with pytest.raises(TypeError) as info:
        VVT(arch=TINY, attn_cfg='softmax')
    first = raised_by_us(info, 'attn_cfg as a string')
    assert "got the string 'softmax'; write attn_cfg=dict(type='softmax')" in first


def test_sr_ratios_with_a_mixer_without_spatial_reduction_names_the_ones_with_it():
    with pytest.raises(ValueError) as info:
        VVT(arch=TINY, attn_cfg=dict(type='softmax'), sr_ratios=(8, 4, 2, 1))
    first = raised_by_us(info, 'softmax with sr_ratios')
    assert "type 'softmax' (SoftmaxAttention) takes no spatial reduction" in first
    assert 'sr_ratios=[8, 4, 2, 1]' in first and 'drop sr_ratios' in first
    assert "'spatial_reduction'" in first and "'vicinity'" in first


@pytest.mark.parametrize('attn_cfg, expected', [
    (dict(type='softmax', sr_ratio=2),
     "attention type 'softmax' (SoftmaxAttention) does not take sr_ratio; mixers that do: "
     "'spatial_reduction', 'vicinity'"),
    (dict(type='performer', proj_len=64),
     "attention type 'performer' (PerformerAttention) does not take proj_len; mixers that "
     "do: 'linformer'"),
    (dict(type='cosformer', window=7),
     "attention type 'cosformer' (CosFormerAttention) does not take window; no registered "
     'mixer does; its options are embed_dims'),
])
def test_mixer_option_it_does_not_take_names_mixer_and_option(attn_cfg, expected):
    with pytest.raises(ValueError) as info:
        VVT(arch=TINY, attn_cfg=attn_cfg)
    first = raised_by_us(info, f"{attn_cfg['type']} given {list(attn_cfg)[1]}")
    assert expected in first


def test_spatial_reduction_without_sr_ratios_asks_for_them():
    with pytest.raises(ValueError) as info:
        VVT(arch=TINY, attn_cfg=dict(type='spatial_reduction'))
    first = raised_by_us(info, 'spatial_reduction without sr_ratios')
    assert "attn_cfg=dict(type='spatial_reduction') needs sr_ratios" in first
    assert 'sr_ratios=(8, 4, 2, 1) (PVTv2)' in first
    # Global attention on purpose, or a ratio in attn_cfg itself, is still accepted.
    VVT(arch=TINY, attn_cfg=dict(type='spatial_reduction'), sr_ratios=(1, 1, 1, 1))
    VVT(arch=TINY, attn_cfg=dict(type='spatial_reduction', sr_ratio=2))


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
    ('empty batch', torch.zeros(0, 3, 64, 64), ValueError,
     ('got an empty batch (shape (0, 3, 64, 64))', 'at least one image')),
    ('float64 input to a float32 model', torch.zeros(1, 3, 64, 64, dtype=torch.float64),
     TypeError, ('has torch.float32 weights but got a torch.float64 image batch',
                 'x.float()', 'model.double()')),
])
def test_bad_images_fail_before_reaching_torch(model, case, x, error, expected):
    with pytest.raises(error) as info:
        model(x)
    first = raised_by_us(info, case)
    for part in expected:
        assert part in first


@pytest.mark.parametrize('backbone', list(TINY_ARCHS), ids=lambda b: b.__name__)
@pytest.mark.parametrize('case, x, error, expected', [
    ('empty batch', torch.zeros(0, 3, 64, 64), ValueError, 'got an empty batch'),
    ('float64 input', torch.zeros(1, 3, 64, 64, dtype=torch.float64), TypeError,
     'has torch.float32 weights but got a torch.float64 image batch'),
])
def test_every_backbone_checks_batch_size_and_dtype(backbone, case, x, error, expected):
    model = backbone(arch=TINY_ARCHS[backbone]).eval()
    with pytest.raises(error) as info:
        model(x)
    first = raised_by_us(info, f'{backbone.__name__} {case}')
    assert first.startswith(f'{backbone.__name__} ') and expected in first


def test_other_input_dtype_runs_under_autocast_and_on_a_converted_model(model):
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))
    assert len(outs) == 4
    double = VVT(arch=TINY).eval().double()
    with torch.no_grad():
        assert double(torch.randn(1, 3, 64, 64, dtype=torch.float64))[0].dtype == torch.float64


def _truncated(path: Path) -> None:
    torch.save({'state_dict': VVT(arch=TINY).state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])


def _html_page(path: Path) -> None:
    path.write_text('<!DOCTYPE html><html><body>404 Not Found</body></html>')


@pytest.mark.parametrize('damage', [_truncated, _html_page], ids=['truncated', 'html page'])
def test_damaged_pretrained_checkpoint_is_named_with_init_cfg_and_the_fix(tmp_path, damage):
    path = tmp_path / 'vvt_tiny.pth'
    damage(path)
    model = VVT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CorruptCheckpointError) as info:
        model.init_weights()
    first = raised_by_us(info, f'{damage.__name__[1:]} checkpoint')
    assert first.startswith('VVT init_cfg: checkpoint ') and repr(str(path)) in first
    assert 'is corrupted or truncated' in first and 're-download or re-save' in first


def test_missing_pretrained_checkpoint_points_at_the_config_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = VVT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint='nope.pth'))
    with pytest.raises(FileNotFoundError) as info:
        model.init_weights()
    first = raised_by_us(info, 'missing checkpoint')
    assert "checkpoint 'nope.pth' does not exist" in first
    assert "init_cfg=dict(type='Pretrained'" in first


def test_test_tool_unknown_eval_metric_is_one_line_not_a_traceback(tmp_path):
    config = tmp_path / 'tiny.py'
    config.write_text("default_scope = 'mmseg'\ntest_evaluator = dict(type='IoUMetric')\n")
    checkpoint = tmp_path / 'iter_1.pth'
    checkpoint.touch()
    proc = subprocess.run([sys.executable, 'tools/test.py', str(config), str(checkpoint),
                           '--eval', 'bogus'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''
    print(f'\ntools/test.py --eval bogus -> exit {proc.returncode}: {last}')
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith('error: --eval bogus: unknown metric; use mIoU')
