# Semantic FPN + VVT-M on ADE20K in PVT's setting (VVT paper Table V: 47.4 mIoU).
# The recipe of configs/fpn_vvt_s_ade20k.py; `pretrained/vvt_medium.pth` is
# the official ImageNet-1k file or its vvt2mm.py conversion (both layouts load).
_base_ = './fpn_vvt_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_medium.pth')))
