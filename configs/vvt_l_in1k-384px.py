# VVT-L fine-tuned at 384x384 on ImageNet-1k (VVT paper Table XII: 84.7 top-1).
# The recipe of configs/vvt_s_in1k-384px.py, drop path 0.3; load_from is the
# 224 classifier converted by tools/model_converters/vvt2mm.py.
_base_ = './vvt_s_in1k-384px.py'

model = dict(backbone=dict(arch='large', drop_path_rate=0.3))
load_from = 'pretrained/vvt_large_in1k-mm.pth'
