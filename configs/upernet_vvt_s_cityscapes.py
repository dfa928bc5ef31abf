# UPerNet + VVT-S on Cityscapes: 512x1024 crops, whole-image test at 1024x2048.
#
# No paper number: VVT reports ADE20K only. The recipe is ours: the ADE20K
# UPerNet setting (AdamW lr 6e-5, wd 0.01, none on norms, 1500 warm-up
# iterations then poly) on mmseg's Cityscapes data pipeline and its 80k
# schedule, 4 GPUs x 2 images (mmseg's Cityscapes batch). Linear attention
# costs linear time and memory in the pixel count, so the test runs on whole
# 1024x2048 images instead of sliding windows.
#
#   bash tools/dist_train.sh configs/upernet_vvt_s_cityscapes.py 4
#
# `pretrained/vvt_small.pth`: the official ImageNet-1k release as downloaded or
# converted by tools/model_converters/vvt2mm.py; both layouts load.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
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
# SyncBN as mmseg ships it; CPU/single-process launches convert it to BN.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='VVT',
        arch='small',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_small.pth')),
    decode_head=dict(
        in_channels=[96, 160, 320, 512],
        in_index=[0, 1, 2, 3],
        channels=512,
        num_classes=19,
        norm_cfg=norm_cfg),
    # FCN auxiliary head on stage 3 (stride 16, 320 channels).
    auxiliary_head=dict(
        in_channels=320,
        in_index=2,
        channels=256,
        num_classes=19,
        norm_cfg=norm_cfg),
    # The dataset's test pipeline resizes to 2048x1024: one pass over the whole image.
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=80000),
]

# 4 GPUs x 2 images per GPU = 8 crops per iteration.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
