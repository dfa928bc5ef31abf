# Semantic FPN + VVT-S on Cityscapes: 512x1024 crops, whole-image test at 1024x2048.
#
# No paper number: VVT reports ADE20K only. The recipe is ours: the ADE20K
# Semantic FPN setting (FPN neck 256, head 128 channels, AdamW lr 1e-4, wd
# 1e-4, poly 0.9 to 0) on mmseg's Cityscapes pipeline and its 80k schedule,
# 4 GPUs x 2 images. Whole 1024x2048 images at test time: linear attention
# makes them affordable, so no sliding window.
#
#   bash tools/dist_train.sh configs/fpn_vvt_s_cityscapes.py 4
#
# `pretrained/vvt_small.pth`: the official ImageNet-1k release as downloaded or
# converted by tools/model_converters/vvt2mm.py; both layouts load.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['vvt_mm'], allow_failed_imports=False)
# Reliability, also under the libraries' own train/test tools (README, "Faults").
custom_hooks = [
    dict(type='CheckpointSafetyHook'),  # weights-only reads, intact auto-resume, atomic saves
    dict(type='NonFiniteLossHook'),  # stop at a NaN/Inf loss before it is checkpointed
    dict(type='SaveOnSignalHook'),  # SIGTERM (time limit, pre-emption): checkpoint, exit
    dict(type='SampleErrorHook'),  # a sample that fails to load names its files
    dict(type='TorchCompileHook'),  # compile=...: optimizer groups dynamo can trace
]

crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,  # the base points at a ResNet; VVT loads through init_cfg
    backbone=dict(
        _delete_=True,
        type='VVT',
        arch='small',
        drop_path_rate=0.1,  # PVT's segmentation setting
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_small.pth')),
    neck=dict(in_channels=[96, 160, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(channels=128, num_classes=19),
    # The dataset's test pipeline resizes to 2048x1024: one pass over the whole image.
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))
# mmseg's 80k schedule stops the poly decay at 1e-4, which is this lr: decay to 0.
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=0, end=80000),
]

# 4 GPUs x 2 images per GPU = 8 crops per iteration.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
