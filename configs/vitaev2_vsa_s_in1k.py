# ViTAEv2-VSA-S on ImageNet-1k, the official recipe (VSA paper / README: 82.7 top-1 at 224,
# 19.8M parameters with this 1000-class head).
#
# Official training (timm-based, ViTAE-VSA Image-Classification/main.py + ViTAEv2_VSA_S.sh):
# 8 GPUs x 128 = 1024 images, AdamW lr 5e-4 per 512 images (1e-3 here), wd 0.05 without
# decay on biases and norms, 10 warm-up epochs from 1e-6, cosine to 1e-5 over 300
# epochs plus 10 cool-down epochs at 1e-5, drop path 0.1, RandAugment m9 (mstd 0.5),
# random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, model EMA
# (decay 0.99996 per 512 images), bicubic centre crop 0.9 for evaluation.
#
#   bash tools/dist_train.sh configs/vitaev2_vsa_s_in1k.py 8
#   # evaluate official weights: the official layout is converted on load.
#   python tools/test.py configs/vitaev2_vsa_s_in1k.py pretrained/vitaev2_vsa_s-mm.pth
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['vvt_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ViTAEv2VSA', arch='s', drop_path_rate=0.1, out_indices=(3, )),
    # Mean over the last stage's tokens, as the official classifier (no final norm).
    neck=dict(type='GlobalAveragePooling'),
    # `head.fc.*` is where the converter puts the official `head.*` weights.
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# timm's crop_pct 0.9: resize the short edge to floor(224 / 0.9) = 248, centre-crop 224.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
# 8 GPUs x 128 images = 1024 (auto_scale_lr rescales lr for other totals).
train_dataloader = dict(batch_size=128)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    # timm decays every weight of 2+ dims (the relative position bias tables included).
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 1e-3, by_epoch=True, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=10, end=300,
         convert_to_iter_based=True),
]
# Epochs 300-309 are timm's cool-down at the minimum lr (the cosine above has ended).
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

# Official model EMA: decay 0.99996 per 512 images -> 0.99996 ** 2 per step of 1024.
# Reliability hooks as in the other configs (README, "Faults").
custom_hooks = [
    dict(type='CheckpointSafetyHook'),  # weights-only reads, intact auto-resume, atomic saves
    dict(type='NonFiniteLossHook'),  # stop at a NaN/Inf loss before it is checkpointed
    dict(type='SaveOnSignalHook'),  # SIGTERM (time limit, pre-emption): checkpoint, exit
    dict(type='SampleErrorHook'),  # a sample that fails to load names its files
    dict(type='TorchCompileHook'),  # compile=...: optimizer groups dynamo can trace
    dict(type='EMAHook', momentum=1 - 0.99996**2, priority='ABOVE_NORMAL'),
]
