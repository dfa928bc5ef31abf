"""tools/infer.py: classification top-5 and segmentation overlay from a config."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

from vvt_mm.testing import ROOT, load_tool, official_checkpoint

infer = load_tool('tools/infer.py')


def write_image(path: Path, h: int = 60, w: int = 84) -> np.ndarray:
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def test_classifier_on_official_weights_prints_top5_and_writes_them_on_the_image(tmp_path):
    ckpt = tmp_path / 'vvt_tiny.pth'
    official_checkpoint(ckpt, hot_class=7)  # the head makes class 7 win
    image = tmp_path / 'img.png'
    rgb = write_image(image)
    out = tmp_path / 'vis' / 'cls.png'
    result = infer.main([str(ROOT / 'configs' / 'vvt_t_in1k.py'), str(ckpt), str(image),
                         '--out', str(out), '--device', 'cpu'])
    names = [name for name, _ in result['topk']]
    scores = [score for _, score in result['topk']]
    from mmpretrain.datasets import ImageNet
    assert names[0] == ImageNet.METAINFO['classes'][7]
    assert len(names) == 5 and scores == sorted(scores, reverse=True)
    assert scores[0] > 0.99
    drawn = np.asarray(Image.open(out).convert('RGB'))
    assert drawn.shape == rgb.shape and (drawn != rgb).any()


def test_classifier_scores_equal_a_hand_preprocessed_forward(tmp_path):
    """Mean/std normalisation and RGB order come from the config, as in training."""
    ckpt = tmp_path / 'vvt_tiny.pth'
    backbone, head = official_checkpoint(ckpt)
    image = tmp_path / 'img.png'
    rgb = write_image(image, 256, 256)  # ResizeEdge(256) keeps it, CenterCrop(224) cuts 16
    result = infer.main([str(ROOT / 'configs' / 'vvt_t_in1k.py'), str(ckpt), str(image),
                         '--out', str(tmp_path / 'o.png'), '--device', 'cpu'])
    crop = torch.from_numpy(rgb[16:240, 16:240].astype(np.float32)).permute(2, 0, 1)
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    with torch.no_grad():
        probs = head(backbone(((crop - mean) / std)[None])[-1].mean(dim=(2, 3))).softmax(-1)
    expected = probs[0].topk(5).values.tolist()
    assert [score for _, score in result['topk']] == pytest.approx(expected, rel=1e-4)


def test_segmentor_overlay_has_the_image_size_and_shows_the_predicted_class(tmp_path):
    # The real Semantic FPN config at a small test scale, random weights except a
    # classifier bias that makes class 3 win everywhere.
    cfg_path = tmp_path / 'fpn_small.py'
    cfg_path.write_text(
        f"_base_ = '{ROOT / 'configs' / 'fpn_vvt_t_ade20k.py'}'\n"
        "test_pipeline = [dict(type='LoadImageFromFile'),\n"
        "                 dict(type='Resize', scale=(128, 64), keep_ratio=True),\n"
        "                 dict(type='PackSegInputs')]\n"
        "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n")
    cfg = Config.fromfile(str(cfg_path))
    cfg.model.backbone.init_cfg = None
    registry = importlib.import_module('mmseg.registry').MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = registry.build(cfg.model)
    with torch.no_grad():
        model.decode_head.conv_seg.bias.zero_()
        model.decode_head.conv_seg.bias[3] = 100.0
    ckpt = tmp_path / 'seg.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    image = tmp_path / 'img.png'
    rgb = write_image(image)
    out = tmp_path / 'seg.png'
    result = infer.main([str(cfg_path), str(ckpt), str(image), '--out', str(out),
                         '--device', 'cpu'])
    from mmseg.datasets import ADE20KDataset
    name, share = result['classes'][0]
    assert name == ADE20KDataset.METAINFO['classes'][3] and share == 1.0
    drawn = np.asarray(Image.open(out).convert('RGB'))
    assert drawn.shape == rgb.shape
    # The overlay blends the class colour into the image.
    colour = np.array(ADE20KDataset.METAINFO['palette'][3])
    assert np.abs(drawn.astype(float) - (0.5 * rgb + 0.5 * colour)).mean() < 3


def test_missing_inputs_and_a_wrong_checkpoint_exit_with_a_message(tmp_path):
    image = tmp_path / 'img.png'
    write_image(image)
    config = str(ROOT / 'configs' / 'vvt_t_in1k.py')
    with pytest.raises(SystemExit, match='checkpoint file .* does not exist'):
        infer.main([config, str(tmp_path / 'none.pth'), str(image)])
    wrong = tmp_path / 'wrong.pth'
    torch.save({'conv.weight': torch.zeros(3)}, wrong)
    with pytest.raises(SystemExit, match='0 of 186 tensors match'):
        infer.main([config, str(wrong), str(image), '--out', str(tmp_path / 'o.png')])
