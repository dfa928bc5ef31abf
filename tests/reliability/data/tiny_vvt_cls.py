# A VVT image classifier small enough to train a few iterations on CPU in a
# second: the kill-and-resume test's model. Deterministic: no random
# augmentation, no drop path, num_workers=0, fixed seed.
# data_root is set by the test (--cfg-options train_dataloader.dataset.data_root=...).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['vvt_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=2, mean=[127.5] * 3, std=[64.] * 3, to_rgb=False),
    backbone=dict(
        type='VVT',
        arch=dict(embed_dims=[8, 16, 16, 16], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
                  mlp_ratios=[2, 2, 2, 2]),
        drop_path_rate=0.,
        out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=16,
              loss=dict(type='CrossEntropyLoss')))

train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(type='CustomDataset', data_root='data/tiny_cls',
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]),
    sampler=dict(type='InfiniteSampler', shuffle=True))

# AdamW (has per-parameter state) and a warmup + cosine schedule (has per-step
# state), so a resume that dropped either would change the losses.
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=4, end=12),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=12)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=False, window_size=1)  # log each iteration's own loss
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
