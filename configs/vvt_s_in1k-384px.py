# VVT-S fine-tuned at 384x384 on ImageNet-1k (VVT paper Table XII: 83.4 top-1).
#
# The paper gives no fine-tuning recipe, so this is DeiT's 384 fine-tune (the
# official code base is DeiT's): 30 epochs from the 224 model, AdamW lr 5e-6
# for batch 512 (8 GPUs x 64), wd 1e-8, constant after 5 warm-up epochs, same augmentation at
# 384 and a 438 -> 384 centre crop for testing (DeiT's 256/224 ratio).
#
# `load_from` is the whole 224 classifier (backbone + head) in mm layout:
#   python tools/model_converters/vvt2mm.py vvt_small.pth pretrained/vvt_small_in1k-mm.pth
_base_ = './vvt_s_in1k.py'

img_size = 384
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size * 256 // 224, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=5e-6, weight_decay=1e-8))
# DeiT sets min_lr = lr for this fine-tune: warm up from 1e-6, then constant.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.2, by_epoch=True, end=5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
auto_scale_lr = dict(base_batch_size=512)

load_from = 'pretrained/vvt_small_in1k-mm.pth'
