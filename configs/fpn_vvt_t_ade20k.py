# Semantic FPN + VVT-T on ADE20K in PVT's setting (not in the paper's Table V).
# The recipe of configs/fpn_vvt_s_ade20k.py; `pretrained/vvt_tiny.pth` is
# the official ImageNet-1k file or its vvt2mm.py conversion (both layouts load).
_base_ = './fpn_vvt_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_tiny.pth')))
