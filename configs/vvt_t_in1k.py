# VVT-T on ImageNet-1k (VVT paper Table II: 79.4 top-1 at 224).
# The recipe of configs/vvt_s_in1k.py with the official drop path 0.1.
_base_ = './vvt_s_in1k.py'

model = dict(backbone=dict(arch='tiny', drop_path_rate=0.1))
