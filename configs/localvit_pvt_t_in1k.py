# LocalViT-PVT (PVT-tiny with locality FFNs) on ImageNet-1k (LocalViT README: 78.14
# top-1, 13.5M parameters with this head; `localvit_pvt_tiny`).
#
# The DeiT recipe of configs/localvit_t_in1k.py (the official code trains every
# variant with the same main.py); the classifier reads the class token that PVTv1
# adds in the last stage, after the final norm.
#
#   bash tools/dist_train.sh configs/localvit_pvt_t_in1k.py 8
_base_ = './localvit_t_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='LocalViTPVT', arch='tiny', drop_path_rate=0.1,
                  out_type='cls_token'),
    head=dict(in_channels=512))
