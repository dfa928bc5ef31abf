# VVT-M on ImageNet-1k (VVT paper Table II: 83.8 top-1 at 224).
# The recipe of configs/vvt_s_in1k.py, drop path 0.3.
_base_ = './vvt_s_in1k.py'

model = dict(backbone=dict(arch='medium', drop_path_rate=0.3))
