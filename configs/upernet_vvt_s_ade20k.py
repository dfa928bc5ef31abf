# UPerNet + VVT-S on ADE20K in Swin's setting (VVT paper, Table V: 46.8 mIoU).
#
# 8 GPUs x 2 images = batch 16, 512x512 crops, 160k iterations, AdamW lr 6e-5,
# wd 0.01 (none on norms), 1500 linear warm-up iterations then poly (power 1).
#
#   bash tools/dist_train.sh configs/upernet_vvt_s_ade20k.py 8
#
# Pretrained weights: `pretrained/vvt_small.pth` is the official ImageNet-1k
# release (README of OpenNLPLab/Vicinity-Vision-Transformer) as downloaded, or
# its conversion by tools/model_converters/vvt2mm.py (--backbone-only or not):
# VVT converts the official layout on load, so both files work unchanged.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
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

crop_size = (512, 512)
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
        num_classes=150,
        norm_cfg=norm_cfg),
    # FCN auxiliary head on stage 3 (stride 16, 320 channels).
    auxiliary_head=dict(
        in_channels=320,
        in_index=2,
        channels=256,
        num_classes=150,
        norm_cfg=norm_cfg))

# AdamW; like Swin's configs, no weight decay on the (layer) norms.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=160000),
]

# 8 GPUs x 2 images per GPU = 16 images per iteration.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
