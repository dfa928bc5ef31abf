# UPerNet + VVT-M on ADE20K in Swin's setting (VVT paper Table V: 48.1 mIoU).
# The recipe of configs/upernet_vvt_s_ade20k.py; `pretrained/vvt_medium.pth` is
# the official ImageNet-1k file or its vvt2mm.py conversion (both layouts load).
_base_ = './upernet_vvt_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_medium.pth')))
