# Semantic FPN + LVT on ADE20K in PVT's setting (the recipe of
# configs/fpn_vvt_s_ade20k.py, so the backbones compare one-to-one). The LVT paper
# reports SegFormer's head instead (39.3 mIoU, 160k iterations); this config is the
# Semantic FPN comparison across our backbones, not a reproduction of that number.
#
# FPN neck 256 channels, FPN head 128 channels, 8 GPUs x 2 images = batch 16,
# 512x512 crops, 80k iterations, AdamW lr 1e-4, wd 1e-4, poly (power 0.9) to 0.
#
#   bash tools/dist_train.sh configs/fpn_lvt_ade20k.py 8
#
# `pretrained/lvt_imagenet.pth`: the official ImageNet-1k release (`lvt_cls`,
# converted on load: its class-attention classifier is dropped, its final norm
# becomes norm3, norm0-2 start fresh as in the official segmentation code) or ours.
_base_ = ['./fpn_localvit_pvt_t_ade20k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='LVT',
        arch='lvt',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/lvt_imagenet.pth')),
    neck=dict(in_channels=[64, 64, 160, 256]))
