# VVT-L on ImageNet-1k (VVT paper Table II: 84.1 top-1 at 224).
# The recipe of configs/vvt_s_in1k.py, drop path 0.3.
_base_ = './vvt_s_in1k.py'

model = dict(backbone=dict(arch='large', drop_path_rate=0.3))
