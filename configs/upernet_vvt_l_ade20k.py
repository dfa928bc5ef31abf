# UPerNet + VVT-L on ADE20K in Swin's setting (VVT paper Table V: 48.8 mIoU).
# The recipe of configs/upernet_vvt_s_ade20k.py; `pretrained/vvt_large.pth` is
# the official ImageNet-1k file or its vvt2mm.py conversion (both layouts load).
_base_ = './upernet_vvt_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_large.pth')))
