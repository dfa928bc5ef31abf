# LVT on ImageNet-1k with a plain classifier: global average pooling of the normed
# stage-4 map and a linear head (3.43M backbone + 0.26M head).
#
# Not the official recipe: the released model (`lvt_cls`, 74.8 top-1) adds a
# VOLO-style classifier (class token, two class-attention blocks, an auxiliary
# token-labelling head) and trains with token labelling (precomputed NFNet
# labels), which mmpretrain does not provide. The backbone loads from that
# release (converted on load); its classifier is dropped. Optimiser settings
# follow the official command: 8 GPUs x 128 = 1024 images, AdamW lr 1.6e-3,
# drop path 0.1, with the DeiT-style augmentation of configs/localvit_t_in1k.py.
#
#   bash tools/dist_train.sh configs/lvt_in1k.py 8
_base_ = './localvit_t_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='LVT', arch='lvt', drop_path_rate=0.1,
                  out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(in_channels=256))

optim_wrapper = dict(optimizer=dict(lr=1.6e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 1.6e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300,
         convert_to_iter_based=True),
]
