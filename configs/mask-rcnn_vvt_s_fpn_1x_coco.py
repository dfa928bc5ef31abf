# Mask R-CNN + VVT-S on COCO, 1x schedule (12 epochs), in PVT's detection setting.
#
# The VVT paper reports no detection numbers; this follows PVT: FPN on all four
# stages, AdamW lr 1e-4, wd 1e-4, 8 GPUs x 2 images = batch 16, 1333x800
# inputs padded to a multiple of 32, mmdet's 1x steps.
#
#   bash tools/dist_train.sh configs/mask-rcnn_vvt_s_fpn_1x_coco.py 8
#
# `pretrained/vvt_small.pth`: the official ImageNet-1k file or its
# tools/model_converters/vvt2mm.py conversion; both layouts load.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
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

model = dict(
    backbone=dict(
        _delete_=True,
        type='VVT',
        arch='small',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_small.pth')),
    neck=dict(in_channels=[96, 160, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
