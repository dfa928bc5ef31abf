# Mask R-CNN + VVT-T on COCO, 1x schedule: the recipe of configs/mask-rcnn_vvt_s_fpn_1x_coco.py.
# `pretrained/vvt_tiny.pth`: the official file or its vvt2mm.py conversion.
_base_ = './mask-rcnn_vvt_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/vvt_tiny.pth')))
