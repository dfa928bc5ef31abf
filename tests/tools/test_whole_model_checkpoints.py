"""tools/test.py and tools/infer.py refuse checkpoints that would leave weights random."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vvt_mm.testing import ROOT, load_tool, official_checkpoint, to_official

test_tool = load_tool('tools/test.py')
infer = load_tool('tools/infer.py')


def first_error_line(info: pytest.ExceptionInfo) -> str:
    line = str(info.value.code).splitlines()[0]
    print(f'\n-> {line}')
    return line


def backbone_state(run) -> dict:
    saved = torch.load(str(run.checkpoint), map_location='cpu')['state_dict']
    return {k[len('backbone.'):]: v for k, v in saved.items() if k.startswith('backbone.')}


def run_test_tool(run, checkpoint: Path, tmp_path: Path) -> None:
    test_tool.main([str(run.config), str(checkpoint), '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', *run.options()])


def test_test_tool_refuses_a_backbone_only_checkpoint(upernet_trained_by_our_tools, tmp_path):
    ckpt = tmp_path / 'backbone.pth'
    torch.save(dict(state_dict=backbone_state(upernet_trained_by_our_tools)), ckpt)
    with pytest.raises(SystemExit) as info:
        run_test_tool(upernet_trained_by_our_tools, ckpt, tmp_path)
    line = first_error_line(info)
    assert line.startswith('error: tools/test.py: ') and str(ckpt) in line
    assert 'backbone-only checkpoint' in line and 'decode_head' in line
    assert "init_cfg=dict(type='Pretrained'" in line


def test_test_tool_refuses_an_official_imagenet_checkpoint_for_a_segmentor(
        upernet_trained_by_our_tools, tmp_path):
    ckpt = tmp_path / 'vvt_tiny.pth'
    torch.save(dict(model=to_official(backbone_state(upernet_trained_by_our_tools))), ckpt)
    with pytest.raises(SystemExit) as info:
        run_test_tool(upernet_trained_by_our_tools, ckpt, tmp_path)
    line = first_error_line(info)
    assert '(official VVT layout) does not hold the weights of the whole EncoderDecoder' in line
    assert 'missing (e.g. decode_head.' in line and 'train from it' in line


def test_test_tool_evaluates_our_whole_checkpoint(upernet_trained_by_our_tools, tmp_path,
                                                  capsys):
    run_test_tool(upernet_trained_by_our_tools, upernet_trained_by_our_tools.checkpoint,
                  tmp_path)
    assert 'mIoU' in capsys.readouterr().out


def write_image(path: Path) -> Path:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_infer_refuses_a_checkpoint_of_another_arch(tmp_path):
    ckpt = tmp_path / 'vvt_tiny.pth'
    official_checkpoint(ckpt)  # VVT-T, given to the VVT-S classifier
    image = write_image(tmp_path / 'img.png')
    with pytest.raises(SystemExit) as info:
        infer.main([str(ROOT / 'configs' / 'vvt_s_in1k.py'), str(ckpt), str(image),
                    '--out', str(tmp_path / 'o.png'), '--device', 'cpu'])
    line = first_error_line(info)
    assert line.startswith('error: tools/infer.py: ') and 'ImageClassifier' in line
    assert 'missing (e.g. backbone.stages.' in line
    assert 'prefix' not in line  # no init_cfg advice from the backbone loader


def test_infer_accepts_a_head_for_another_class_count_and_says_so(tmp_path, capsys):
    ckpt = tmp_path / 'vvt_tiny_10cls.pth'
    official_checkpoint(ckpt, num_classes=10)
    image = write_image(tmp_path / 'img.png')
    infer.main([str(ROOT / 'configs' / 'vvt_t_in1k.py'), str(ckpt), str(image),
                '--out', str(tmp_path / 'o.png'), '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'head.fc.weight has shape (10, 512) in the checkpoint, (1000, 512)' in out
