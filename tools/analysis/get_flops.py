"""Parameters and FLOPs of any config's model (classifier, segmentor or detector).

    python tools/analysis/get_flops.py configs/vvt_s_in1k.py
    python tools/analysis/get_flops.py configs/upernet_vvt_s_ade20k.py --shape 512 512
    python tools/analysis/get_flops.py configs/vvt_s_in1k.py --attn-impl as-built

Convention (fvcore's, through mmengine's ``FlopAnalyzer``): one multiply-add
is one FLOP; convolutions, linears, matmuls/einsums, norms, pooling and
upsampling are counted, element-wise operations are not. This is how the VVT
paper counts (3.0 / 5.6 / 9.4 / 10.8 GFLOPs at 224 for VVT-T/S/M/L).

Vicinity attention is counted in the paper's (reference) formulation by
default: ``Q' = [q cos a, q sin a, q cos b, q sin b]`` and ``K'^T V`` cost
``8 N d^2`` multiply-adds per head. The default runtime path computes the same
function in separable form with about half of that (``4 N d^2``);
``--attn-impl as-built`` counts that form. (On CPU, maps of at most 256
tokens -- 576 without gradients -- run the official formulation instead,
which is faster there; ``as-built`` still counts them as separable.)
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction

CONVENTION = ('fvcore convention: 1 multiply-add = 1 FLOP; element-wise ops not counted')
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmseg': (512, 512), 'mmdet': (800, 1333)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Count the parameters and FLOPs of a config\'s model '
        f'({CONVENTION}).')
    parser.add_argument('config', help='config file, e.g. configs/vvt_s_in1k.py')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input H W (or one size for a square); default 224 for '
                        'classifiers, 512 for segmentors, 800 1333 for detectors')
    parser.add_argument('--attn-impl', choices=['reference', 'as-built'], default='reference',
                        help='count vicinity attention as the paper does (reference, '
                        '8Nd^2) or as the model runs it (as-built; separable, 4Nd^2)')
    parser.add_argument('--table-depth', type=int, default=0, metavar='N',
                        help='also print a per-module table N levels deep')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.arch=tiny')
    return parser.parse_args(argv)


def build_model(cfg: Config) -> tuple[nn.Module, str]:
    """Build ``cfg.model`` in its library's scope, without loading any weights."""
    from vvt_mm.runtime import build_model_from_config
    scope = cfg.get('default_scope', 'mmengine')
    return build_model_from_config(cfg, scope).eval(), scope


def use_attention_impl(model: nn.Module, impl: str) -> int:
    """Switch every vicinity attention module to ``impl``; return how many."""
    from vvt_mm.models.attention import VicinityAttention
    count = 0
    for module in model.modules():
        if isinstance(module, VicinityAttention):
            module.impl = impl
            count += 1
    return count


def resolve_shape(shape: list[int] | None, scope: str) -> tuple[int, int]:
    if not shape:
        return DEFAULT_SHAPES.get(scope, (224, 224))
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise ValueError(f'--shape takes H W or one size, got {shape}')


class TensorForward(nn.Module):
    """The model's tensor path on one image: what the FLOP counter traces.

    Classifiers and segmentors run ``mode='tensor'``; a detector runs the
    backbone, neck and heads (``_forward``), with the metadata a two-stage
    detector's RPN needs. Detector inputs are padded to a multiple of 32 as
    mmdet's data preprocessor does.
    """

    def __init__(self, model: nn.Module, scope: str, shape: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.scope = scope
        self.data_samples = None
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            pad = tuple(-(-s // 32) * 32 for s in shape)
            sample = DetDataSample(metainfo=dict(
                img_shape=shape, ori_shape=shape, pad_shape=pad, batch_input_shape=pad,
                scale_factor=(1.0, 1.0)))
            self.data_samples = [sample]

    def input_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        if self.scope == 'mmdet':
            return tuple(-(-s // 32) * 32 for s in shape)
        return shape

    def forward(self, x: torch.Tensor):
        if self.scope == 'mmdet':
            return self.model._forward(x, self.data_samples)
        return self.model(x, mode='tensor')


def separable_vicinity_flops(inputs: list, outputs: list) -> int:
    """Multiply-adds of the separable vicinity core (the ``vvt_mm`` custom op).

    The tracer cannot see inside it, so it is counted from its ``(G, H, W, d)``
    q and k maps: per group, the row and column ``k (v|1)^T`` sums
    (``2 Nk d (d+1)``), their trigonometric weighting into the four states
    (``2 (Hk + Wk) d (d+1)``), the per-row/column query matrices
    (``2 (H + W) d (d+1)``) and the query products (``2 N d (d+1)``).
    """
    from mmengine.analysis.jit_handles import get_shape
    groups, h, w, dim = get_shape(inputs[0])
    _, hk, wk, _ = get_shape(inputs[1])
    per_pair = dim * (dim + 1)
    return groups * per_pair * 2 * (hk * wk + hk + wk + h + w + h * w)


def count(model: nn.Module, scope: str, shape: tuple[int, int],
          table_depth: int = 0) -> dict:
    """Parameters and FLOPs of ``model`` on a ``1 x 3 x H x W`` input."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.print_helper import complexity_stats_table
    wrapper = TensorForward(model, scope, shape).eval()
    h, w = wrapper.input_shape(shape)
    inputs = torch.zeros(1, 3, h, w)
    analyzer = FlopAnalyzer(wrapper, (inputs, ))
    # Element-wise ops are uncounted by convention; do not warn about each one.
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.set_op_handle(**{'vvt_mm::vicinity_separable_forward': separable_vicinity_flops})
    with torch.no_grad():
        flops = analyzer.total()
    result = dict(flops=flops, params=sum(p.numel() for p in model.parameters()),
                  input_shape=(h, w), by_operator=dict(analyzer.by_operator()))
    if table_depth > 0:
        result['table'] = complexity_stats_table(analyzer, max_depth=table_depth,
                                                  show_param_shapes=False)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        shape = resolve_shape(args.shape, cfg.get('default_scope', 'mmpretrain'))
    except ValueError as err:
        sys.exit(f'error: {err}')
    print(f'[1/2] building the model of {args.config}', flush=True)
    model, scope = build_model(cfg)
    num_attn = use_attention_impl(model, 'reference' if args.attn_impl == 'reference'
                                  else 'torch')
    print(f'[2/2] tracing one {shape[0]}x{shape[1]} image', flush=True)
    result = count(model, scope, shape, args.table_depth)
    h, w = result['input_shape']
    line = '=' * 64
    padded = f' (padded from {shape[0]}x{shape[1]})' if (h, w) != tuple(shape) else ''
    attn = ('no vicinity attention' if not num_attn else
            'reference formulation, 8Nd^2, as the paper counts'
            if args.attn_impl == 'reference' else 'separable form, 4Nd^2, as built')
    print(f'{line}\nConfig: {args.config}\nInput shape: 3x{h}x{w}{padded}\n'
          f'Params: {result["params"] / 1e6:.2f} M\n'
          f'FLOPs: {result["flops"] / 1e9:.2f} G\n'
          f'Counting: {CONVENTION}\nVicinity attention: {attn}\n{line}')
    if num_attn and args.attn_impl == 'reference':
        print('The default runtime path (separable form) does fewer: run with '
              '--attn-impl as-built to count it.')
    if 'table' in result:
        print(result['table'])
    return result


if __name__ == '__main__':
    main()
