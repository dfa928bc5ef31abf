# UPerNet + VVT-T on ADE20K in Swin's setting (not in the paper's Table V).
#
# Same recipe as configs/upernet_vvt_s_ade20k.py; drop path 0.1 as VVT-T's
# ImageNet training. `pretrained/vvt_tiny.pth`: the official ImageNet-1k file
# or its vvt2mm.py conversion (both layouts load).
_base_ = './upernet_vvt_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_tiny.pth')))
