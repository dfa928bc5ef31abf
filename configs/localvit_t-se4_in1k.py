# LocalViT-T-SE4 on ImageNet-1k (LocalViT README: 75.74 top-1, 9.38M parameters;
# `localvit_tiny_mlp4_act3_r4`: the SE squeezes the 768 hidden channels by 4).
# The recipe of configs/localvit_t_in1k.py.
_base_ = './localvit_t_in1k.py'

model = dict(backbone=dict(arch='tiny-se4'))
