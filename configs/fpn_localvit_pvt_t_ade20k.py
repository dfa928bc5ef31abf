# Semantic FPN + LocalViT-PVT-T on ADE20K in PVT's setting (the recipe of
# configs/fpn_vvt_s_ade20k.py, so the backbones compare one-to-one; the LocalViT
# authors published no ADE20K number).
#
# FPN neck 256 channels, FPN head 128 channels, 8 GPUs x 2 images = batch 16,
# 512x512 crops, 80k iterations, AdamW lr 1e-4, wd 1e-4, poly (power 0.9) to 0.
#
#   bash tools/dist_train.sh configs/fpn_localvit_pvt_t_ade20k.py 8
#
# `pretrained/localvit_pvt.pth`: the official ImageNet-1k release (converted on load)
# or ours. Position embeddings are interpolated to each input's grid.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
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

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,  # the base points at a ResNet; the backbone loads through init_cfg
    backbone=dict(
        _delete_=True,
        type='LocalViTPVT',
        arch='tiny',
        drop_path_rate=0.1,  # PVT's segmentation setting
        # The locality FFNs' BatchNorms synchronised across GPUs (batch 2 per GPU);
        # the launcher turns SyncBN into BN on machines without CUDA.
        ffn_norm_cfg=dict(type='SyncBN', requires_grad=True),
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/localvit_pvt.pth')),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(channels=128, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))
# mmseg's 80k schedule stops the poly decay at 1e-4, which is this lr: decay to 0.
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=0, end=80000),
]

# 8 GPUs x 2 images per GPU = 16 images per iteration.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
