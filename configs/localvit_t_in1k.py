# LocalViT-T on ImageNet-1k, the official (DeiT) recipe (LocalViT README: 74.84 top-1,
# 5.91M parameters with this head; `localvit_tiny_mlp4_act3_r192`).
#
# Official training (DeiT code base, timm 0.3.2): 8 GPUs x 128 = 1024 images, 300
# epochs, AdamW lr 5e-4 per 512 images (1e-3 here), wd 0.05 without decay on biases
# and norms, 5 warm-up epochs from 1e-6, cosine to 1e-5, drop path 0.1, RandAugment
# m9 (mstd 0.5), random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1;
# evaluation: bicubic resize of the short side to 256, centre crop 224. The classifier
# reads the normed class token (`out_type='cls_token'`).
#
#   bash tools/dist_train.sh configs/localvit_t_in1k.py 8
#   # evaluate the official weights: the official layout is converted on load.
#   python tools/test.py configs/localvit_t_in1k.py pretrained/localvit_t-mm.pth
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
    backbone=dict(type='LocalViT', arch='tiny', drop_path_rate=0.1, out_type='cls_token'),
    neck=None,
    # `head.fc.*` is where the converter puts the official `head.*` weights.
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# 8 GPUs x 128 images = 1024 (auto_scale_lr rescales lr for other totals).
train_dataloader = dict(batch_size=128)

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    # timm/DeiT: no decay on 1-D parameters; position embeddings and the class
    # token are excluded as well (DeiT's no_weight_decay).
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0),
                     '.cls_token': dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
