# LocalViT-S on ImageNet-1k (LocalViT README: 80.78 top-1, 22.43M parameters;
# `localvit_small_mlp4_act3_r384`). The recipe of configs/localvit_t_in1k.py.
_base_ = './localvit_t_in1k.py'

model = dict(backbone=dict(arch='small'), head=dict(in_channels=384))
