"""ONNX export with dynamic H, W: every backbone and VVT token mixer, and the tool's CLI.

Each model is exported once with symbolic H, W (at 64x96; ViTAEv2 at 96x128) and
run in onnxruntime at sizes the trace never saw (odd, non-square, not multiples
of any stride), where a graph specialised to the traced size would be wrong or
fail. Tiny archs keep the exports fast; the real configs are the slow tests.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from vvt_mm import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA
from vvt_mm.deployment import (
    MAX_RELATIVE_ERROR,
    ExportError,
    compare_with_onnxruntime,
    dynamic_size_range,
    export_onnx,
    verification_sizes,
)
from vvt_mm.models.attention import attention_names
from vvt_mm.models.layers import VariedSizeWindowAttention
from vvt_mm.testing import ROOT, load_tool

pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')

EXPORT_SIZE = (64, 96)
SIZES = [EXPORT_SIZE, (77, 101), (96, 64)]
# Two stages are enough to run a token mixer on maps of several sizes.
VVT_2STAGE = dict(embed_dims=[16, 32], num_heads=[1, 2], depths=[1, 1], mlp_ratios=[2, 2])
VVT_4STAGE = dict(embed_dims=[16, 16, 32, 32], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
                  mlp_ratios=[2, 2, 2, 2])
# Options that keep the mixers small; each is exported with its own defaults otherwise.
MIXER_OPTIONS = dict(gc=dict(ratio=0.25), performer=dict(num_features=16),
                     linformer=dict(proj_len=16, pool_size=4), vsa=dict(window_size=2))
# ViTAEv2 windows of 2 (official: 7): its last stage then holds 2+ windows from 65 px.
VITAE_SIZES = [(96, 128), (77, 101), (109, 77)]


def vvt_with(mixer: str) -> VVT:
    sr = dict(sr_ratios=(4, 2)) if mixer == 'spatial_reduction' else {}
    return VVT(arch=VVT_2STAGE, attn_cfg=dict(type=mixer, **MIXER_OPTIONS.get(mixer, {})),
               out_indices=(0, 1), **sr)


FAMILIES = {
    'VVT': lambda: VVT(arch=VVT_4STAGE),
    'VVT sr_ratios': lambda: VVT(arch=VVT_2STAGE, sr_ratios=(4, 2), out_indices=(0, 1)),
    'LocalViT': lambda: LocalViT(arch=dict(embed_dims=32, num_heads=2, depth=1, mlp_ratio=2,
                                           se_reduction=4)),
    'LocalViTPVT': lambda: LocalViTPVT(arch=dict(embed_dims=[16, 32], num_heads=[1, 2],
                                                 depths=[1, 1], mlp_ratios=[2, 2],
                                                 sr_ratios=[2, 1]), out_indices=(0, 1)),
    'LVT': lambda: LVT(arch=dict(embed_dims=[16, 32], num_heads=[1, 2], depths=[1, 1],
                                 mlp_ratios=[2, 2], sr_ratios=[4, 2], mixers=['csa', 'rasa']),
                  out_indices=(0, 1)),
}
MIXERS = ['vicinity_no_locality', 'softmax', 'spatial_reduction', 'performer', 'linformer',
          'cosformer', 'gc', 'csa', 'rasa', 'vsa']  # 'vicinity' is the default: the VVT cases


def tiny_vitae(window_size: int = 2) -> ViTAEv2VSA:
    return ViTAEv2VSA(arch=dict(embed_dims=[8, 8, 16, 16], token_dims=[16, 16, 32, 32],
                                depths=[1, 1, 1, 1], nc_heads=[2, 1, 2, 1],
                                rc_heads=[2, 2, 1, 1], nc_groups=[1, 1, 1, 1],
                                rc_groups=[1, 1, 1, 1], wide_pcm=False),
                      window_size=window_size)


def export_and_compare(model: torch.nn.Module, path, sizes) -> dict:
    """Max relative error of all outputs at each size, after one dynamic export."""
    torch.manual_seed(0)
    model.init_weights()
    model.eval()
    export_onnx(model, torch.randn(1, 3, *sizes[0]), str(path), dynamic=True)
    errors = compare_with_onnxruntime(model, str(path), sizes)
    worst = {}
    for e in errors:
        worst[e.size] = max(worst.get(e.size, 0.0), e.max_rel)
    print({f'{h}x{w}': f'{v:.1e}' for (h, w), v in worst.items()})
    return worst


def test_every_registered_mixer_is_covered():
    names = {min(aliases, key=len) for aliases in attention_names().values()}
    assert names == set(MIXERS) | {'vicinity'}


@pytest.mark.parametrize('family', list(FAMILIES))
def test_backbone_exports_with_dynamic_hw_and_matches_pytorch_at_unseen_sizes(family,
                                                                               tmp_path):
    worst = export_and_compare(FAMILIES[family](), tmp_path / 'm.onnx', SIZES)
    assert set(worst) == set(SIZES)
    assert max(worst.values()) <= MAX_RELATIVE_ERROR, worst


@pytest.mark.slow
def test_vitaev2_exports_with_dynamic_hw_above_its_window_limit(tmp_path):
    worst = export_and_compare(tiny_vitae(), tmp_path / 'm.onnx', VITAE_SIZES)
    assert set(worst) == set(VITAE_SIZES)
    assert max(worst.values()) <= MAX_RELATIVE_ERROR, worst


@pytest.mark.parametrize('mixer', MIXERS)
def test_vvt_mixer_exports_with_dynamic_hw_and_matches_pytorch(mixer, tmp_path):
    worst = export_and_compare(vvt_with(mixer), tmp_path / 'm.onnx', SIZES)
    assert max(worst.values()) <= MAX_RELATIVE_ERROR, worst


def test_varied_size_window_attention_exports_with_dynamic_hw(tmp_path):
    """ViTAEv2's window logic alone (the whole backbone is the slow test above):
    windows padded symmetrically, sampled by learned offsets and scales, cropped,
    on a map whose size derives from the input's as in a stage."""
    torch.manual_seed(0)
    attn = VariedSizeWindowAttention(8, 2, window_size=3)
    for predictor in (attn.sampling_offsets[-1], attn.sampling_scales[-1]):
        torch.nn.init.normal_(predictor.weight, std=0.2)
    stage = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, 4, 3), attn).eval()
    export_onnx(stage, torch.randn(1, 3, *SIZES[0]), str(tmp_path / 'vsa.onnx'), dynamic=True)
    errors = compare_with_onnxruntime(stage, str(tmp_path / 'vsa.onnx'), SIZES)
    assert [e.size for e in errors] == SIZES
    assert max(e.max_rel for e in errors) <= MAX_RELATIVE_ERROR, errors


def test_vitaev2_below_its_window_limit_is_refused_before_tracing(tmp_path):
    model = tiny_vitae().eval()
    assert dynamic_size_range(model)[0] == 32 * 2 + 1
    with pytest.raises(ExportError, match=r'stages\.3\.reduction\.attn \(VariedSizeWindow'
                                          r'Attention, window_size=2, at stride 32\).*'
                                          r'at least 65.*fixed size'):
        export_onnx(model, torch.randn(1, 3, *EXPORT_SIZE), str(tmp_path / 'm.onnx'),
                    dynamic=True)
    assert not (tmp_path / 'm.onnx').exists()
    assert dynamic_size_range(tiny_vitae(7).eval())[0] == 225  # the official window


def test_deep_spatial_reduction_raises_the_lowest_dynamic_size(tmp_path):
    """VVT_sr's (4, 4, 4, 4): stage 4 reduces by 32 x 4, so H, W must exceed 128."""
    model = VVT(arch=VVT_4STAGE, sr_ratios=(4, 4, 4, 4)).eval()
    assert dynamic_size_range(model)[0] == 129
    with pytest.raises(ExportError, match=r'sr_ratio=4, at stride 32.*range \[64, 4096\] '
                                          r'reaches below it.*at least 129'):
        export_onnx(model, torch.randn(1, 3, 160, 160), str(tmp_path / 'm.onnx'),
                    dynamic=True, size_range=(64, 4096))
    assert dynamic_size_range(VVT(arch=VVT_4STAGE, sr_ratios=(8, 4, 2, 1)).eval())[0] == 64


def test_custom_vicinity_kernels_are_refused_with_the_exportable_impl(tmp_path):
    model = VVT(arch=VVT_2STAGE, attn_cfg=dict(type='vicinity', impl='torch'),
                out_indices=(0, 1)).eval()
    with pytest.raises(ExportError, match=r"stages\.0\.blocks\.0\.attn .*impl='torch'.*"
                                          r"impl='auto'"):
        export_onnx(model, torch.randn(1, 3, *EXPORT_SIZE), str(tmp_path / 'm.onnx'))


def test_verification_sizes_are_new_non_square_sizes_inside_the_range():
    sizes = verification_sizes(64, 96, dynamic=True)
    assert sizes[0] == (64, 96) and len(set(sizes)) == 3
    assert all(h != w and (h % 32 or w % 32) for h, w in sizes[1:])
    assert verification_sizes(64, 96, dynamic=False) == [(64, 96)]
    assert all(min(s) >= 225 for s in verification_sizes(225, 225, True, (225, 4096)))


# --- the tool ---------------------------------------------------------------------------

def write_config(tmp_path, base: str, body: str) -> str:
    """One of our configs with a tiny model (same heads, pipeline and preprocessor)."""
    path = tmp_path / f'tiny_{base}'
    path.write_text(f"_base_ = [{str(ROOT / 'configs' / base)!r}]\n{body}")
    return str(path)


# _delete_: the base names its arch ('tiny'), a string a dict cannot merge into.
TINY_VVT = f'dict(_delete_=True, **{VVT_2STAGE!r})'


def save_whole_model(config: str, path) -> None:
    """A checkpoint of the whole model, as training would leave it (weights not random)."""
    from mmengine.config import Config
    model = pytorch2onnx.build_full_model(Config.fromfile(config))
    torch.manual_seed(1)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


def check_verify_lines(stdout: str, output: str, sizes) -> None:
    lines = [line for line in stdout.splitlines() if line.startswith('verify ')]
    assert len(lines) == len(sizes), stdout
    for line, (h, w) in zip(lines, sizes):
        assert line.startswith(f'verify {h}x{w} {output}: max abs error ') and \
            line.endswith(' ok'), line
        assert float(line.split('max rel error ')[1].split()[0]) <= MAX_RELATIVE_ERROR


def test_cli_exports_and_verifies_a_classifier_checkpoint(tmp_path):
    """The command line as a user runs it: a process, its exit status and its lines."""
    config = write_config(tmp_path, 'vvt_t_in1k.py',
                          f'model = dict(backbone=dict(arch={TINY_VVT}, out_indices=(1, )), '
                          'head=dict(in_channels=32, num_classes=10))\n')
    ckpt = tmp_path / 'cls.pth'
    save_whole_model(config, ckpt)
    out = tmp_path / 'cls.onnx'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'), config,
         str(ckpt), '--shape', '64', '96', '--dynamic', '--verify', '--out', str(out)],
        capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'loaded' in proc.stdout and 'randomly initialised' not in proc.stdout
    assert 'outputs logits' in proc.stdout and 'RGB images normalised' in proc.stdout
    check_verify_lines(proc.stdout, 'logits', verification_sizes(64, 96, True))
    import onnxruntime as ort
    session = ort.InferenceSession(str(out))
    assert session.get_inputs()[0].shape == [1, 3, 'height', 'width']
    assert [o.name for o in session.get_outputs()] == ['logits']


def test_cli_exports_and_verifies_a_segmentor_checkpoint(tmp_path, capsys):
    """UPerNet: its PPM's adaptive pooling must follow H, W too."""
    config = write_config(
        tmp_path, 'upernet_vvt_t_ade20k.py',
        f'model = dict(backbone=dict(arch={TINY_VVT}, out_indices=(0, 1)), '
        'decode_head=dict(in_channels=[16, 32], in_index=[0, 1], channels=8, num_classes=5), '
        'auxiliary_head=dict(in_channels=32, in_index=1, channels=8, num_classes=5))\n')
    ckpt = tmp_path / 'seg.pth'
    save_whole_model(config, ckpt)
    result = pytorch2onnx.main([config, str(ckpt), '--shape', '64', '96', '--dynamic',
                                '--verify', '--out', str(tmp_path / 'seg.onnx')])
    stdout = capsys.readouterr().out
    assert result['kind'] == 'segmentor' and result['outputs'] == ['seg_logits']
    check_verify_lines(stdout, 'seg_logits', verification_sizes(64, 96, True))
    assert 'verified: onnxruntime matches PyTorch' in stdout


def test_cli_refuses_a_dynamic_vitae_export_below_its_window_limit(tmp_path, capsys):
    config = tmp_path / 'vitae.py'  # the official window (7), a tiny arch
    arch = tiny_vitae().arch
    config.write_text(f"model = dict(type='ViTAEv2VSA', arch={arch!r})\n")
    with pytest.raises(SystemExit) as exc:
        pytorch2onnx.main([str(config), '--shape', '128', '128', '--dynamic',
                           '--out', str(tmp_path / 'v.onnx')])
    assert 'window_size=7, at stride 32' in str(exc.value) and 'at least 225' in str(exc.value)
    assert 'randomly initialised' in capsys.readouterr().out
    assert not (tmp_path / 'v.onnx').exists()


def test_cli_refuses_detectors_and_names_backbone_only():
    with pytest.raises(SystemExit, match='detectors are not supported.*--backbone-only'):
        pytorch2onnx.main([str(ROOT / 'configs' / 'retinanet_vvt_t_fpn_1x_coco.py'),
                           '--shape', '64', '64'])


def test_cli_exits_1_when_onnxruntime_disagrees(tmp_path, capsys, monkeypatch):
    """A fixed-size export of a backbone config, judged against a tolerance of 1e-12."""
    config = tmp_path / 'vvt.py'
    config.write_text(f"model = dict(type='VVT', arch={VVT_2STAGE!r}, out_indices=(0, 1))\n")
    monkeypatch.setattr(pytorch2onnx, 'MAX_RELATIVE_ERROR', 1e-12)
    with pytest.raises(SystemExit, match='onnxruntime differs from PyTorch'):
        pytorch2onnx.main([str(config), '--shape', '64', '96', '--verify',
                           '--out', str(tmp_path / 'vvt.onnx')])
    out = capsys.readouterr().out
    assert 'outputs feat0, feat1' in out and 'fixed 64x96' in out
    assert 'verify 64x96 feat0' in out and 'FAILED' in out


@pytest.mark.slow
@pytest.mark.parametrize('config, output', [('vvt_t_in1k.py', 'logits'),
                                            ('upernet_vvt_t_ade20k.py', 'seg_logits')])
def test_cli_exports_the_real_vvt_t_configs(config, output, tmp_path):
    """VVT-T at full size as the configs build it (random weights, 224 px)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'),
         str(ROOT / 'configs' / config), '--shape', '224', '224', '--dynamic', '--verify',
         '--out', str(tmp_path / 'm.onnx')],
        capture_output=True, text=True, timeout=1800,
        env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'randomly initialised' in proc.stdout
    check_verify_lines(proc.stdout, output, verification_sizes(224, 224, True))


def test_backbone_config_loads_official_ours_and_whole_model_checkpoints(tmp_path):
    """A bare-backbone config takes the backbone in any of the layouts users hold."""
    from vvt_mm.testing import official_checkpoint
    source, _ = official_checkpoint(tmp_path / 'official.pth')
    expected = source.state_dict()
    torch.save({'state_dict': expected}, tmp_path / 'ours.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in expected.items()}},
               tmp_path / 'whole.pth')
    for name in ('official.pth', 'ours.pth', 'whole.pth'):
        model = VVT(arch='tiny')
        assert pytorch2onnx.load_backbone_checkpoint(model, str(tmp_path / name)) == \
            len(expected)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    torch.save({'state_dict': dict(list(expected.items())[:5])}, tmp_path / 'part.pth')
    with pytest.raises(pytorch2onnx.CheckpointError, match='does not hold the weights'):
        pytorch2onnx.load_backbone_checkpoint(VVT(arch='tiny'), str(tmp_path / 'part.pth'))
