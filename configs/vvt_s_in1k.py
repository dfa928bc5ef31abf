# VVT-S on ImageNet-1k, the paper's recipe (VVT paper Table II: 82.7 top-1 at 224).
#
# The official training (DeiT/PVT code base): 300 epochs, AdamW lr 5e-4 per 512
# images (1e-3 for the total batch 1024 = 8 GPUs x 128), wd 0.05 with no decay
# on norms and biases, 5 linear warm-up epochs then cosine to 1e-5, gradient
# clipping at 1.0, drop path 0.3, RandAugment m9, random erasing 0.25, Mixup
# 0.8 / CutMix 1.0 and label smoothing 0.1.
#
#   bash tools/dist_train.sh configs/vvt_s_in1k.py 8
#   # evaluate the official weights (converted by tools/model_converters/vvt2mm.py):
#   python tools/test.py configs/vvt_s_in1k.py pretrained/vvt_small_in1k-mm.pth
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
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
    type='ImageClassifier',
    backbone=dict(type='VVT', arch='small', drop_path_rate=0.3, out_indices=(3, )),
    # Mean over the last stage's tokens (after its norm), as the official model.
    neck=dict(type='GlobalAveragePooling'),
    # `head.fc.*` is where vvt2mm.py puts the official `head.*` weights.
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# 8 GPUs x 128 images = 1024 (auto_scale_lr rescales lr for other totals).
train_dataloader = dict(batch_size=128)

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    # The official warm-up starts at 1e-6 = lr * 1e-3.
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
