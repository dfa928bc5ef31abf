# Semantic FPN head + LocalViT-T (plain ViT) on ADE20K, PVT's setting otherwise.
#
# LocalViT-T is a plain ViT: every block works on the stride-16 grid, so there is
# no pyramid to feed FPN. As mmseg does for ViT, the backbone returns the map
# after blocks 3, 6, 9 and 12 (out_indices 2, 5, 8, 11) and mmseg's MultiLevelNeck
# rescales them by 4, 2, 1 and 0.5 (strides 4/8/16/32, 256 channels) in place of
# the FPN neck; the FPN head then fuses them as usual. Position embeddings
# (trained on the 14x14 grid) are interpolated bicubically to each input's grid.
#
# FPN head 128 channels, 8 GPUs x 2 images = batch 16, 512x512 crops, 80k
# iterations, AdamW lr 1e-4, wd 1e-4, poly (power 0.9) to 0.
#
#   bash tools/dist_train.sh configs/fpn_localvit_t_ade20k.py 8
#
# `pretrained/localvit_t.pth`: the official ImageNet-1k release (converted on load)
# or ours.
_base_ = ['./fpn_localvit_pvt_t_ade20k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViT',
        arch='tiny',
        drop_path_rate=0.1,
        ffn_norm_cfg=dict(type='SyncBN', requires_grad=True),
        out_indices=(2, 5, 8, 11),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/localvit_t.pth')),
    neck=dict(
        _delete_=True,
        type='MultiLevelNeck',
        in_channels=[192, 192, 192, 192],
        out_channels=256,
        scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[256, 256, 256, 256]))
