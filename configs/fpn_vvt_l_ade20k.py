# Semantic FPN + VVT-L on ADE20K in PVT's setting (VVT paper Table V: 47.9 mIoU).
# The recipe of configs/fpn_vvt_s_ade20k.py; `pretrained/vvt_large.pth` is
# the official ImageNet-1k file or its vvt2mm.py conversion (both layouts load).
_base_ = './fpn_vvt_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_large.pth')))
