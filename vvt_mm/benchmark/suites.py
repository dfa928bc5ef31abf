"""What is measured: the attention core, every token mixer and whole backbones.

* ``core``: the attention core alone (``B x heads x N x d`` tensors), our
  separable path (and the Triton kernel on CUDA) against the official
  ``N x 4d`` formulation, plus the separable form's GEMMs alone as a floor.
* ``attention``: every token mixer registered in ``vvt_mm.registry.ATTENTIONS``
  at equal dims (the paper's Fig. 8 setting: 128 channels, one head), plus
  VVT's attention with the reference core and with ``sr_ratio=4`` (VVT_sr),
  and PVTv2's spatial reduction at its stage-1 ratio 8. Softmax attention runs
  through ``F.scaled_dot_product_attention``; quadratic mixers are skipped
  above ``--max-quadratic-tokens``.
* ``backbone``: VVT-S (ours, reference core, VVT_sr, ``with_cp``) against
  PVTv2-b2 (mmdet ``PyramidVisionTransformerV2``) and Swin-T (mmseg).

Each suite is ``suite(args, meter, progress) -> list[Row]``.
"""
from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn

from vvt_mm.models.attention.builder import attention_names, build_attention
from vvt_mm.models.attention.vicinity_dispatch import triton_available
from vvt_mm.ops.vicinity_reference import vicinity_attention_reference
from vvt_mm.ops.vicinity_separable import vicinity_attention_separable

from .measurement import Meter, Row, forward_backward, fresh_process_memory, run_case

__all__ = ['Progress', 'GEMM_FLOOR', 'BACKBONES', 'core_suite', 'gemm_floor', 'mixer_configs',
           'attention_suite', 'backbone_builders', 'backbone_suite', 'attention_core_share']

Progress = Callable[[str], None]  # shows which case runs now
GEMM_FLOOR = 'GEMMs only (floor)'
QUADRATIC = {'softmax'}
BACKBONES = ('VVT-S', 'VVT-S(reference)', 'VVT-S_sr4(VVT_sr)', 'VVT-S(with_cp)', 'PVTv2-b2',
             'Swin-T')


def core_suite(args: argparse.Namespace, meter: Meter, progress: Progress) -> list[Row]:
    rows = []
    impls = {'ours(torch)': vicinity_attention_separable, 'reference': vicinity_attention_reference}
    if triton_available(torch.empty(1, device=meter.device)):
        from vvt_mm.ops.vicinity_triton import vicinity_attention_triton
        impls['ours(triton)'] = vicinity_attention_triton
    for side in args.core_sizes:
        gen = torch.Generator().manual_seed(0)
        shape = (args.core_batch, args.core_heads, side * side, args.core_dim)
        q, k, v = (torch.randn(shape, generator=gen).to(meter.device).requires_grad_()
                   for _ in range(3))
        for name, fn in impls.items():
            progress(f'core {name} {side}x{side} tokens')
            row = Row('core', name, side, side * side, args.core_batch)
            call = partial(fn, q, k, v, (side, side))
            rows.append(run_case(row, call, [], [q, k, v], meter, args.repeats))
        progress(f'core GEMM floor {side}x{side} tokens')
        rows.append(gemm_floor(side, args, meter))
    return rows


def gemm_floor(side: int, args: argparse.Namespace, meter: Meter) -> Row:
    """Time of the separable core's batched GEMMs alone, on whole maps.

    Forward is four ``2 N d (d+1)``-flop products (row and column sums of
    ``k [v|1]^T``, then ``q`` times the per-row and per-column matrices) and
    backward eight (their transposes, for ``q``, the state, ``k`` and ``v``).
    No implementation of the separable form can beat this row on the same BLAS;
    the reference divided by it bounds the speed-up reachable here.
    """
    groups, dim = args.core_batch * args.core_heads, args.core_dim
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(meter.device)

    by_row = [rand(groups, side, side, dim) for _ in range(2)] + [
        rand(groups, side, side, dim + 1) for _ in range(2)]  # q|k, [v|1]
    by_col = [t.transpose(1, 2).contiguous() for t in by_row]
    mats = rand(groups, side, dim, dim + 1)
    # Every operand in the layout its GEMM runs fastest in (a transposed
    # right operand runs ~1.5x slower), the small matrices' copies untimed.
    mats_t = mats.transpose(-2, -1).contiguous()
    mats_v = mats[..., :dim].contiguous()

    def forward() -> None:
        for q, k, v, _ in (by_row, by_col):
            k.transpose(-2, -1) @ v
            q @ mats

    def backward() -> None:
        for q, k, v, g in (by_row, by_col):
            g @ mats_t  # d q
            q.transpose(-2, -1) @ g  # d state
            v @ mats_t  # d k
            k @ mats_v  # d v

    def all_twelve() -> None:
        forward()
        backward()

    row = Row('core', GEMM_FLOOR, side, side * side, args.core_batch)
    all_twelve()  # untimed: the first call pays for BLAS set-up
    tries = max(args.repeats, 2) + 1  # a single cold-ish sample can invert fwd vs fwd+bwd
    row.fwd_ms = min(meter.timed(forward) for _ in range(tries))
    row.fwd_bwd_ms = min(meter.timed(all_twelve) for _ in range(tries))
    row.note = 'bound, not an implementation'
    return row


def mixer_configs() -> dict[str, dict]:
    """Every registered token mixer (one name per class) plus VVT variants."""
    cfgs = {}
    for _, aliases in sorted(attention_names().items()):
        name = sorted(aliases, key=lambda n: (n[:1].isupper(), len(n)))[0]
        cfgs[name] = dict(type=name)
    cfgs['vicinity'] = dict(type='vicinity', impl='auto')
    cfgs['vicinity(reference)'] = dict(type='vicinity', impl='reference')
    cfgs['vicinity_sr4(VVT_sr)'] = dict(type='vicinity', sr_ratio=4)
    if 'spatial_reduction' in cfgs:
        cfgs['spatial_reduction'] = dict(type='spatial_reduction', sr_ratio=8)  # PVTv2 stage 1
    return cfgs


def attention_suite(args: argparse.Namespace, meter: Meter, progress: Progress) -> list[Row]:
    rows = []
    cfgs = mixer_configs()
    for size in args.attn_sizes:
        side = size // 4
        tokens = side * side
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.attn_batch, tokens, args.attn_dims, generator=gen)
        x = x.to(meter.device).requires_grad_()
        for name, cfg in cfgs.items():
            progress(f'attention {name} @ {size}px ({side}x{side} tokens)')
            row = Row('attention', name, size, tokens, args.attn_batch)
            if cfg['type'] in QUADRATIC and tokens > args.max_quadratic_tokens:
                row.note = f'skipped: O(N^2) above {args.max_quadratic_tokens} tokens'
                rows.append(row)
                continue
            try:
                module = build_attention(dict(cfg), embed_dims=args.attn_dims,
                                         num_heads=args.attn_heads).to(meter.device)
            except (TypeError, ValueError, KeyError) as err:
                row.note = f'not built with defaults: {err}'[:100]
                rows.append(row)
                continue
            call = partial(module, x, (side, side))
            rows.append(run_case(row, call, list(module.parameters()), [x], meter,
                                 args.repeats))
            del module
    return rows


def backbone_builders() -> dict[str, Callable[[], nn.Module]]:
    from vvt_mm.models.backbones.vvt import VVT

    def pvtv2_b2() -> nn.Module:
        # mmdet configs/pvt/retinanet_pvtv2-b2_fpn_1x_coco.py
        from mmdet.models.backbones import PyramidVisionTransformerV2
        return PyramidVisionTransformerV2(embed_dims=64, num_layers=[3, 4, 6, 3])

    def swin_t() -> nn.Module:
        # mmseg configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k
        from mmseg.models.backbones import SwinTransformer
        return SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                               window_size=7)

    return {
        'VVT-S': lambda: VVT('small'),
        'VVT-S(reference)': lambda: VVT('small', attn_cfg=dict(type='vicinity',
                                                               impl='reference')),
        'VVT-S_sr4(VVT_sr)': lambda: VVT('small', sr_ratios=(4, 4, 4, 4)),
        'VVT-S(with_cp)': lambda: VVT('small', with_cp=True),
        'PVTv2-b2': pvtv2_b2,
        'Swin-T': swin_t,
    }


def backbone_suite(args: argparse.Namespace, meter: Meter, progress: Progress) -> list[Row]:
    rows = []
    warmed = False
    for name, build in backbone_builders().items():
        if args.backbones and name not in args.backbones:
            continue
        if not warmed and args.backbone_sizes and not args.memory_only:
            # The first model timed in a process ran ~20% slower at 512^2 than
            # the same computation timed later (thread pools, kernel caches and
            # the heap warming up); one untimed throw-away round evens it out.
            progress('backbone warm-up (untimed)')
            warm_up_process(build, min(args.backbone_sizes), args.backbone_batch, meter.device)
            warmed = True
        try:
            model = build().to(meter.device)
        except (ImportError, ModuleNotFoundError) as err:
            rows += [Row('backbone', name, s, (s // 4)**2, args.backbone_batch,
                         note=f'unavailable: {err}'[:100]) for s in args.backbone_sizes]
            continue
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        for size in args.backbone_sizes:
            if name not in args.full_sweep and size > args.others_max_size:
                continue
            progress(f'backbone {name} @ {size}px')
            gen = torch.Generator().manual_seed(0)
            img = torch.randn(args.backbone_batch, 3, size, size, generator=gen)
            img = img.to(meter.device)
            row = Row('backbone', name, size, (size // 4)**2, args.backbone_batch)
            # with_cp only changes training memory; its forward equals VVT-S's.
            rows.append(run_case(row, partial(model, img), params, [], meter, args.repeats,
                                 memory_only=args.memory_only))
            if args.memory_only:
                continue
            if name in ('VVT-S', 'VVT-S(reference)'):
                row.extra['core_share'] = attention_core_share(model, img, meter)
            if (meter.device.type == 'cpu' and args.backbone_memory == 'subprocess' and
                    not args.quick):
                progress(f'backbone {name} @ {size}px: memory in a fresh process')
                memory_in_fresh_process([row], args)
        del model
    measured = [r for r in rows if not r.note]
    if (measured and args.quick and not args.memory_only and meter.device.type == 'cpu' and
            args.backbone_memory == 'subprocess'):
        # One child for every case: interpreter start-up and imports cost ~5 s
        # per child on 2 cores, most of a --quick run.
        progress('backbones: memory in one fresh process')
        memory_in_fresh_process(measured, args)
    return rows


def memory_in_fresh_process(rows: list[Row], args: argparse.Namespace) -> None:
    """Replace ``rows``' in-process memory readings by a fresh, pinned process's."""
    names = list(dict.fromkeys(r.name for r in rows))
    sizes = sorted({r.size for r in rows})
    cli_args = ['--device', 'cpu', '--suites', 'backbone', '--backbones', *names,
                '--full-sweep', *names, '--backbone-sizes', *map(str, sizes),
                '--backbone-batch', str(rows[0].batch), '--threads', str(args.threads)]
    try:
        children = {(c['name'], c['size']): c for c in fresh_process_memory(cli_args)}
    except (subprocess.SubprocessError, ValueError) as err:
        for row in rows:
            row.note = f'memory: in-process (fresh process failed: {type(err).__name__})'
        return
    for row in rows:
        child = children.get((row.name, row.size))
        if child is None:
            row.note = 'memory: in-process (the fresh process skipped this case)'
            continue
        row.fwd_mem_mb, row.train_mem_mb = child['fwd_mem_mb'], child['train_mem_mb']
        row.note = 'memory: fresh process'


def warm_up_process(build: Callable[[], nn.Module], size: int, batch: int,
                    device: torch.device) -> None:
    model = build().to(device).train()
    img = torch.randn(batch, 3, size, size, device=device)
    for _ in range(2):
        with torch.no_grad():
            model(img)
        forward_backward(partial(model, img))
    del model


def attention_core_share(model: nn.Module, img: torch.Tensor, meter: Meter) -> float:
    """Fraction of a no-grad forward spent inside the attention cores.

    Swapping the attention core cannot speed the backbone up by more than
    ``1 / (1 - share)`` (Amdahl): the target checks print that bound next to
    the measured ratio.
    """
    cores = [m for m in model.modules() if hasattr(m, 'attention_core')]
    inside = [0.0]

    def timing(core: Callable) -> Callable:
        def run(*args, **kwargs):
            out = []
            inside[0] += meter.timed(lambda: out.append(core(*args, **kwargs))) / 1e3
            return out[0]
        return run

    for m in cores:
        m.attention_core = timing(m.attention_core)
    try:
        with torch.no_grad():
            model(img)  # warm-up
            best = float('inf')
            for _ in range(2):
                inside[0] = 0.0
                total = meter.timed(lambda: model(img)) / 1e3
                if total < best:
                    best, share = total, inside[0] / total
    finally:
        for m in cores:
            del m.attention_core  # back to the class method
    return share
