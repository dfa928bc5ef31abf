"""tools/test.py and tools/infer.py refuse checkpoints that would leave weights random."""
from __future__ import annotations

import re
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


@pytest.fixture(scope='module')
def tiny_in1k(tmp_path_factory) -> list[str]:
    """configs/vvt_t_in1k.py's test loader on 2 classes x 1 image, 64 px crops."""
    from vvt_mm.testing import make_tiny_imagenet
    root = make_tiny_imagenet(str(tmp_path_factory.mktemp('in1k')), num_classes=2,
                              num_train=1, num_val=1, size=72)
    return [f'test_dataloader.dataset.data_root={root}', 'test_dataloader.batch_size=2',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'test_dataloader.dataset.pipeline.1.scale=72',
            'test_dataloader.dataset.pipeline.2.crop_size=64']


def test_test_tool_converts_an_official_classifier_checkpoint(tiny_in1k, tmp_path, capsys):
    ckpt = tmp_path / 'vvt_tiny.pth'
    official_checkpoint(ckpt, hot_class=1)  # every image scores class 1
    dump = tmp_path / 'preds.pkl'
    test_tool.main([str(ROOT / 'configs' / 'vvt_t_in1k.py'), str(ckpt), '--work-dir',
                    str(tmp_path / 'w'), '--out', str(dump), '--cfg-options', *tiny_in1k])
    out = capsys.readouterr().out
    # The converted head predicts class 1 for every image (random weights would
    # not); the val images are of classes 0 and 1, so exactly one is right.
    import mmengine
    assert [int(p['pred_label']) for p in mmengine.load(str(dump))] == [1, 1]
    assert re.search(r'^accuracy/top1\s+50\.0000$', out, re.M), out[-2000:]


def test_test_tool_refuses_a_backbone_only_checkpoint_for_a_classifier(tiny_in1k, tmp_path):
    ckpt = tmp_path / 'vvt_tiny_backbone.pth'
    backbone, _ = official_checkpoint(tmp_path / 'official.pth')
    torch.save(dict(state_dict=backbone.state_dict()), ckpt)
    with pytest.raises(SystemExit) as info:
        test_tool.main([str(ROOT / 'configs' / 'vvt_t_in1k.py'), str(ckpt), '--work-dir',
                        str(tmp_path / 'w'), '--cfg-options', *tiny_in1k])
    line = first_error_line(info)
    assert 'backbone-only checkpoint' in line and 'head.fc.weight' in line
