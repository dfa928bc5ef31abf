"""Every entry config builds its model in its own library scope and runs.

* each ``configs/*.py`` (not ``_base_``) builds with its ``default_scope`` and
  runs one forward on a small image (detectors through their data
  preprocessor, on an odd size that must be padded to a multiple of 32);
* the VVT configs resolve to the paper's recipes (inheritance merges
  silently, e.g. mmseg's 80k schedule would stop AdamW's poly decay at 1e-4);
* the classifiers have the official parameter counts;
* one config per library trains and validates for a couple of iterations on
  generated data (ImageNet folder, ADE20K layout, COCO json).
"""
from __future__ import annotations

import copy
import functools
import importlib
import logging
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope

import vvt_mm  # noqa: F401
from vvt_mm.testing import make_tiny_ade20k, make_tiny_coco, make_tiny_imagenet

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (ROOT / 'configs').glob('*.py'))

# Official VVT parameter counts with the 1000-class head (REFERENCE.md), in M.
CLASSIFIER_PARAMS = {'tiny': 12.88, 'small': 25.49, 'medium': 47.91, 'large': 61.85}


@functools.cache
def _parse(name: str) -> Config:
    return Config.fromfile(str(ROOT / 'configs' / name))


def load(name: str) -> Config:
    """A fresh copy of a parsed config (parsing the bases costs ~1 s on 2 cores)."""
    return copy.deepcopy(_parse(name))


def build(cfg: Config):
    """The config's model in its own scope with torch's default init.

    No weight files exist here, and ``init_weights`` of the large models costs
    tens of seconds on 2 CPU cores without changing what these tests check.
    """
    scope = cfg.default_scope
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.get('backbone') is not None:
        model_cfg.backbone.init_cfg = None
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(model_cfg)
    return revert_sync_batchnorm(model).eval()


def test_configs_directory_has_every_name_users_type():
    expected = {f'{kind}_vvt_{s}_ade20k.py' for kind in ('upernet', 'fpn') for s in 'tsml'}
    expected |= {f'vvt_{s}_in1k.py' for s in 'tsml'}
    expected |= {f'vvt_{s}_in1k-384px.py' for s in 'tsml'}
    expected |= {f'{det}_vvt_{s}_fpn_1x_coco.py' for det in ('retinanet', 'mask-rcnn')
                 for s in 'ts'}
    assert expected <= set(CONFIGS), sorted(expected - set(CONFIGS))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_in_its_scope_and_runs_a_forward(name):
    cfg = load(name)
    assert 'vvt_mm' in cfg.custom_imports['imports']
    assert cfg.custom_imports['allow_failed_imports'] is False
    scope = cfg.default_scope
    assert scope in ('mmpretrain', 'mmseg', 'mmdet'), scope
    model = build(cfg)
    if scope == 'mmpretrain' and cfg.model.backbone.type == 'VVT':
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert round(params, 2) == CLASSIFIER_PARAMS[cfg.model.backbone.arch]
    with torch.no_grad(), DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmpretrain':
            out = model(torch.randn(1, 3, 32, 32), mode='tensor')
            assert out.shape == (1, cfg.model.head.num_classes)
        elif scope == 'mmseg':
            out = model(torch.randn(1, 3, 32, 32), mode='tensor')
            assert out.shape == (1, cfg.model.decode_head.num_classes, 8, 8)
        else:
            from mmdet.structures import DetDataSample
            h, w = 75, 101  # padded to 96 x 128 by the data preprocessor
            data = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)],
                        data_samples=[DetDataSample(metainfo=dict(
                            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))])
            data = model.data_preprocessor(data, False)
            assert data['inputs'].shape[-2:] == (96, 128)
            outs = model(**data, mode='tensor')
            assert isinstance(outs, tuple) and len(outs) > 0
            out = outs[0][0]
    assert torch.isfinite(out).all()


UPERNET = dict(lr=6e-5, wd=0.01, iters=160000, warmup=1500, power=1.0)
FPN = dict(lr=1e-4, wd=1e-4, iters=80000, warmup=0, power=0.9)


@pytest.mark.parametrize('name', [c for c in CONFIGS if '_vvt_' in c and 'ade20k' in c])
def test_ade20k_configs_follow_the_paper_settings(name):
    cfg = load(name)
    want = UPERNET if name.startswith('upernet') else FPN
    arch = {'t': 'tiny', 's': 'small', 'm': 'medium', 'l': 'large'}[name.split('_')[2]]
    assert cfg.model.backbone.type == 'VVT' and cfg.model.backbone.arch == arch
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                               checkpoint=f'pretrained/vvt_{arch}.pth')
    assert cfg.model.get('pretrained') is None
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', want['lr'], want['wd'])
    assert cfg.train_cfg.max_iters == want['iters']
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert cfg.model.data_preprocessor.size == (512, 512)
    poly = cfg.param_scheduler[-1]
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', want['power'], 0.0,
                                                              want['iters'])
    if want['warmup']:
        warm = cfg.param_scheduler[0]
        assert (warm.type, warm.end, poly.begin) == ('LinearLR', 1500, 1500)
        assert cfg.model.decode_head.channels == 512
        assert cfg.model.auxiliary_head.in_index == 2
        assert cfg.model.auxiliary_head.in_channels == 320
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys['norm'].decay_mult == 0
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    else:
        assert len(cfg.param_scheduler) == 1
        assert cfg.model.neck.out_channels == 256 and cfg.model.decode_head.channels == 128


@pytest.mark.parametrize('name', ['upernet_vvt_s_cityscapes.py', 'fpn_vvt_s_cityscapes.py'])
def test_cityscapes_configs_train_on_crops_and_test_whole_images(name):
    """mmseg's Cityscapes bases, 512x1024 crops, one whole-image pass at 1024x2048."""
    cfg = load(name)
    ade = load(name.replace('cityscapes', 'ade20k'))
    assert cfg.custom_hooks == ade.custom_hooks
    assert cfg.train_dataloader.dataset.type == 'CityscapesDataset'
    assert cfg.model.data_preprocessor.size == (512, 1024)
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop'][0]
    assert crop.crop_size == (512, 1024)
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize'][0]
    assert resize.scale == (2048, 1024) and resize.keep_ratio
    assert cfg.model.test_cfg.mode == 'whole'
    assert cfg.model.decode_head.num_classes == 19
    assert cfg.model.backbone.type == 'VVT' and cfg.model.backbone.arch == 'small'
    assert cfg.train_cfg.max_iters == cfg.param_scheduler[-1].end == 80000
    model = build(cfg)
    from mmseg.structures import SegDataSample
    h, w = 64, 128  # Cityscapes' 1:2 aspect, small
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    with torch.no_grad(), DefaultScope.overwrite_default_scope('mmseg'):
        pred = model.predict(torch.randn(1, 3, h, w), [sample])[0]
    assert pred.seg_logits.data.shape == (19, h, w)


@pytest.mark.parametrize('name', [c for c in CONFIGS if c.startswith('vvt_')])
def test_imagenet_configs_follow_the_official_recipe(name):
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW'
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0
    assert cfg.optim_wrapper.paramwise_cfg.bias_decay_mult == 0
    arch = cfg.model.backbone.arch
    assert cfg.model.backbone.drop_path_rate == (0.1 if arch == 'tiny' else 0.3)
    assert cfg.model.head.type == 'LinearClsHead' and cfg.model.head.in_channels == 512
    if '384px' in name:
        assert cfg.train_cfg.max_epochs == 30
        assert cfg.load_from == f'pretrained/vvt_{arch}_in1k-mm.pth'
        crop = [t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'RandomResizedCrop'][0]
        assert crop.scale == 384
    else:
        # 5e-4 per 512 images at the total batch 1024, 300 epochs, 5 warm-up epochs.
        assert opt.lr == pytest.approx(1e-3) and opt.weight_decay == 0.05
        assert cfg.auto_scale_lr.base_batch_size == 1024 == 8 * cfg.train_dataloader.batch_size
        assert cfg.train_cfg.max_epochs == 300
        assert cfg.param_scheduler[0].end == 5 and cfg.param_scheduler[1].eta_min == 1e-5
        assert cfg.optim_wrapper.clip_grad.max_norm == 1.0


@pytest.mark.parametrize('name', [c for c in CONFIGS if c.endswith('_coco.py')])
def test_coco_configs_use_adamw_1e4_and_the_1x_schedule(name):
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, 1e-4)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.model.neck.in_channels == [96, 160, 320, 512]
    assert cfg.model.data_preprocessor.pad_size_divisor == 32


def test_detector_pads_a_1333x797_image_to_32_and_extracts_five_levels():
    """A real-size, non-multiple-of-32 input through the detector's own path."""
    from mmdet.structures import DetDataSample
    cfg = load('retinanet_vvt_t_fpn_1x_coco.py')
    model = build(cfg)
    h, w = 797, 1333
    data = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)],
                data_samples=[DetDataSample(metainfo=dict(img_shape=(h, w)))])
    with torch.no_grad():
        data = model.data_preprocessor(data, False)
        feats = model.extract_feat(data['inputs'])
    assert data['inputs'].shape[-2:] == (800, 1344)
    # FPN from stride 8 (start_level=1) plus two extra levels.
    assert [tuple(f.shape[-2:]) for f in feats] == [(100, 168), (50, 84), (25, 42),
                                                     (13, 21), (7, 11)]
    assert all(f.shape[1] == 256 for f in feats)


# ---------------------------------------------------------------- train + val loops

def quiet_runner(cfg: Config, work_dir: Path, by_epoch: bool):
    """A Runner of ``cfg`` on CPU: no workers, no pretrained weights, one checkpoint."""
    from mmengine.runner import Runner
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=by_epoch,
                                        interval=1 if by_epoch else 2)
    cfg.default_hooks.pop('visualization', None)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
                       mp_cfg=dict(mp_start_method='fork'))
    cfg.model.backbone.init_cfg = None
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    runner = Runner.from_cfg(cfg)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    return runner


def test_mmpretrain_config_trains_and_validates_on_an_imagenet_folder(tmp_path):
    root = make_tiny_imagenet(str(tmp_path / 'in1k'), num_classes=2, num_train=2,
                              num_val=1, size=72)
    cfg = load('vvt_t_in1k.py')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = root
        cfg[key].batch_size = 2
        for t in cfg[key].dataset.pipeline:  # the real pipelines at 64 instead of 224
            if t.type in ('RandomResizedCrop', 'CenterCrop'):
                t[('scale' if 'scale' in t else 'crop_size')] = 64
            elif t.type == 'ResizeEdge':
                t.scale = 72
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
    runner = quiet_runner(cfg, tmp_path / 'work', by_epoch=True)
    runner.train()
    assert runner.iter == 2  # 4 images, batch 2
    metrics = runner.val()
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


def test_mmseg_config_trains_and_validates_on_an_ade20k_layout(tmp_path):
    root = make_tiny_ade20k(str(tmp_path / 'ade'), num_train=4, num_val=2, height=64,
                            width=80)
    cfg = load('fpn_vvt_t_ade20k.py')  # UPerNet trains in tests/tools/test_launchers.py
    crop = 64
    cfg.model.data_preprocessor.size = (crop, crop)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(2 * crop, crop), ratio_range=(0.75, 1.5),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=(crop, crop), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(2 * crop, crop), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]
    for key, split in (('train_dataloader', 'training'), ('val_dataloader', 'validation'),
                       ('test_dataloader', 'validation')):
        cfg[key].dataset.data_root = root
        cfg[key].dataset.data_prefix = dict(img_path=f'images/{split}',
                                            seg_map_path=f'annotations/{split}')
        cfg[key].dataset.pipeline = train_pipeline if split == 'training' else test_pipeline
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
    runner = quiet_runner(cfg, tmp_path / 'work', by_epoch=False)
    runner.train()
    assert runner.iter == 2
    metrics = runner.val()
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()


def test_mmdet_config_trains_and_validates_on_a_coco_json_with_odd_sizes(tmp_path):
    root = make_tiny_coco(str(tmp_path / 'coco'), num_train=4, num_val=2,
                          sizes=((97, 150), (120, 88), (75, 131)))
    cfg = load('retinanet_vvt_t_fpn_1x_coco.py')
    scale = (160, 96)  # keep-ratio resize, then padding to a multiple of 32
    # A 3-class dataset, the way users fine-tune on their own classes.
    classes = ('person', 'bicycle', 'car')
    cfg.model.bbox_head.num_classes = len(classes)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        dataset.data_root = root + '/'
        dataset.metainfo = dict(classes=classes)
        for t in dataset.pipeline:
            if t.type == 'Resize':
                t.scale = scale
        cfg[key].batch_size = 2
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = root + '/annotations/instances_val2017.json'
    # Two iterations from random init score below 0.05: keep every box so COCO
    # evaluation has predictions to score.
    cfg.model.test_cfg.score_thr = 0.0
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=100)
    runner = quiet_runner(cfg, tmp_path / 'work', by_epoch=True)
    runner.train()
    assert runner.iter == 2
    metrics = runner.val()
    assert 'coco/bbox_mAP' in metrics
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
