"""How results are shown: tables of ratios, target checks, ``results.csv`` and a plot.

Tables give every entry as absolute numbers and as ratios to our entry at the
same size. The target checks print PASS/FAIL against the project's speed and
memory targets with two bounds next to them: the separable core's batched
GEMMs alone (``GEMMs only (floor)``: no implementation of that form beats it
on the same BLAS) and the share of a VVT-S forward spent in the attention
cores (a faster core cannot speed the backbone up by more than
``1 / (1 - share)``).
"""
from __future__ import annotations

import argparse
import csv
import math
from dataclasses import asdict
from pathlib import Path

from .deploy import EAGER, ONNXRUNTIME, compiled_name
from .measurement import Row
from .official import (
    DENSE,
    GEMM_RATE,
    MAC_CONVENTION,
    OFFICIAL,
    OURS,
    dense_floor_ms,
    ours_compiled,
)
from .suites import GEMM_FLOOR

__all__ = ['fmt', 'ratio', 'table', 'comparison', 'fit_line', 'target_checks', 'faster',
           'deploy_report', 'official_report', 'highres_report', 'summary', 'write_csv',
           'plot']


def fmt(x: float | None, unit: str = '') -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return '-'
    return f'{x:.1f}{unit}' if abs(x) >= 10 else f'{x:.2f}{unit}'


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) and b > 0 else float('nan')


def table(title: str, header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = [title, '  '.join(h.rjust(w) for h, w in zip(header, widths))]
    out += ['  '.join(c.rjust(w) for c, w in zip(ln, widths)) for ln in lines]
    return '\n'.join(out)


def index(rows: list[Row]) -> dict[tuple[str, str, int], Row]:
    return {(r.suite, r.name, r.size): r for r in rows}


def comparison(rows: list[Row], suite: str, ours: str, title: str, size_label: str) -> str:
    """Each entry as absolute numbers and as ratios to ``ours`` at the same size."""
    idx = index(rows)
    header = [size_label, 'name', 'fwd ms', 'fwd+bwd ms', 'fwd MiB', 'train MiB',
              'fwd x', 'fwd+bwd x', 'train mem x', 'note']
    lines = []
    for r in [r for r in rows if r.suite == suite]:
        base = idx.get((suite, ours, r.size))
        lines.append([
            str(r.size), r.name, fmt(r.fwd_ms), fmt(r.fwd_bwd_ms), fmt(r.fwd_mem_mb),
            fmt(r.train_mem_mb),
            fmt(ratio(r.fwd_ms, base.fwd_ms)) if base else '-',
            fmt(ratio(r.fwd_bwd_ms, base.fwd_bwd_ms)) if base else '-',
            fmt(ratio(r.train_mem_mb, base.train_mem_mb)) if base else '-', r.note
        ])
    return table(f'{title}  (x = time or memory relative to {ours}; >1: {ours} is better)',
                 header, lines)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``; returns ``(a, b, r2)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx)**2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my)**2 for y in ys) or 1.0
    r2 = 1 - sum((y - a - b * x)**2 for x, y in zip(xs, ys)) / ss_tot
    return a, b, r2


def target_checks(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """PASS/FAIL lines, each naming its target.

    The targets: the core's forward+backward at least 3x faster than the
    reference at 128x128 tokens (with at most a third of its training memory)
    and 4x at 256x256; a VVT-S forward at 512^2 at least 1.3x faster than
    with the reference core; VVT-S below PVTv2-b2 in peak memory at the
    largest size. Training memory per megapixel is printed without a target.
    """
    idx = index(rows)
    lines = []
    for side, need_t, need_m in [(128, 3.0, 1 / 3), (256, 4.0, None)]:
        ours, ref = idx.get(('core', 'ours(torch)', side)), idx.get(('core', 'reference', side))
        if ours and ref:
            sp = ratio(ref.fwd_bwd_ms, ours.fwd_bwd_ms)
            line = (f'core {side}x{side} tokens fwd+bwd speed-up vs reference: {sp:.2f}x '
                    f'(need >= {need_t}) {verdict(sp >= need_t)}')
            floor = idx.get(('core', GEMM_FLOOR, side))
            if floor:
                bound = ratio(ref.fwd_bwd_ms, floor.fwd_bwd_ms)
                line += (f' [its 12 GEMMs alone: {floor.fwd_bwd_ms:.1f} ms, so at most '
                         f'{bound:.2f}x on this BLAS]')
                share = ratio(sp, bound)
                lines.append(f'core {side}x{side} tokens fwd+bwd speed-up / GEMM-floor '
                             f'speed-up: {share:.2f} (need >= 0.9) {verdict(share >= 0.9)}')
            if need_m:
                mr = ratio(ours.train_mem_mb, ref.train_mem_mb)
                line += (f'; peak memory ours/reference: {mr:.3f} (need <= {need_m:.3f}) '
                         f'{verdict(mr <= need_m)}')
            lines.append(line)
    for side in sorted({r.size for r in rows if r.name == 'ours(triton)'}):
        tri = idx[('core', 'ours(triton)', side)]
        torch_path = idx.get(('core', 'ours(torch)', side))
        if torch_path:
            lines.append(f'core {side}x{side} tokens Triton kernel vs torch path: fwd '
                         f'{ratio(torch_path.fwd_ms, tri.fwd_ms):.2f}x, fwd+bwd '
                         f'{ratio(torch_path.fwd_bwd_ms, tri.fwd_bwd_ms):.2f}x faster')
    ours, ref = idx.get(('backbone', 'VVT-S', 512)), idx.get(('backbone', 'VVT-S(reference)', 512))
    if ours and ref:
        sp = ratio(ref.fwd_ms, ours.fwd_ms)
        line = (f'VVT-S forward at 512^2 vs reference attention: {sp:.2f}x '
                f'(need >= 1.3) {verdict(sp >= 1.3)}')
        share = ref.extra.get('core_share')
        if share is not None:
            line += (f' [the reference cores are {100 * share:.1f}% of that forward, so a '
                     f'free core gives at most {1 / (1 - share):.2f}x; ours: '
                     f'{100 * ours.extra.get("core_share", float("nan")):.1f}%]')
        lines.append(line)
    for name in ('VVT-S', 'PVTv2-b2', 'VVT-S_sr4(VVT_sr)', 'VVT-S(with_cp)', 'Swin-T'):
        pts = [(r.size**2 / 1e6, r.train_mem_mb) for r in rows
               if r.suite == 'backbone' and r.name == name and not math.isnan(r.train_mem_mb)]
        if len(pts) >= 3:
            a, b, r2 = fit_line(*zip(*pts))
            lines.append(f'{name} training memory vs pixels: {b:.0f} MiB per megapixel '
                         f'(+{a:.0f} MiB), R^2 = {r2:.4f} (batch {args.backbone_batch})')
    biggest = max(args.backbone_sizes) if args.backbone_sizes else None
    vvt, pvt = idx.get(('backbone', 'VVT-S', biggest)), idx.get(('backbone', 'PVTv2-b2', biggest))
    if vvt and pvt:
        for key, label in (('train_mem_mb', 'training'), ('fwd_mem_mb', 'inference')):
            a, b = getattr(vvt, key), getattr(pvt, key)
            lines.append(f'{label} peak memory at {biggest}^2: VVT-S {a:.0f} MiB vs PVTv2-b2 '
                         f'{b:.0f} MiB (need VVT-S below) {verdict(a < b)}')
    lines += official_checks(rows, args)
    lines += highres_checks(rows)
    return lines


def official_checks(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """Ours (eager, compiled) vs the official structure (eager) and VVT-S forward vs
    the GEMM rate."""
    idx = index(rows)
    lines = []
    gemm = next((r for r in rows if r.name == GEMM_RATE), None)
    for size in sorted({r.size for r in rows if r.suite == 'official'}):
        ours, off = idx.get(('official', OURS, size)), idx.get(('official', OFFICIAL, size))
        if not (ours and off):
            continue
        what = f'{ours.note} at {size}^2' if ours.note else f'{size}^2'
        fwd, both = ratio(off.fwd_ms, ours.fwd_ms), ratio(off.fwd_bwd_ms, ours.fwd_bwd_ms)
        line = (f'{what} vs the official structure, eager: forward {fwd:.2f}x '
                f'(need >= 1.5) {verdict(fwd >= 1.5)}; forward+backward {both:.2f}x '
                f'(need >= 2.2) {verdict(both >= 2.2)}')
        dense = idx.get(('official', DENSE, size))
        bounds = _speed_bounds(ours, off, gemm, dense)
        lines.append(line + bounds)
        comp = idx.get(('official', ours_compiled(args.compile_backend), size))
        if comp:
            fwd, both = ratio(off.fwd_ms, comp.fwd_ms), ratio(off.fwd_bwd_ms, comp.fwd_bwd_ms)
            lines.append(f'{what} compiled ({args.compile_backend}) vs the official structure '
                         f'in eager: forward {fwd:.2f}x (need >= 2.5) {verdict(fwd >= 2.5)}; '
                         f'forward+backward {both:.2f}x (need >= 3) {verdict(both >= 3)}'
                         + bounds)
        if gemm:
            macs = ours.extra.get('macs', float('nan'))
            rate = gemm.extra['macs_per_s']
            for row, label, need in ((ours, 'ours, eager', 0.7),
                                     (comp, f'ours, compiled ({args.compile_backend})', 0.85),
                                     (off, 'official structure, eager', None)):
                if row is None:
                    continue
                achieved = macs / (row.fwd_ms / 1e3)
                frac = achieved / rate
                line = (f'{what} forward ({label}): {macs / 1e9:.1f} G multiply-adds '
                        f'in {row.fwd_ms:.0f} ms = {achieved / 1e9:.1f} G multiply-adds/s = '
                        f'{frac:.2f} of the GEMM rate')
                if need is not None:
                    line += f' (need >= {need}) {verdict(frac >= need)}'
                    if dense:
                        line += (f' [our linear and conv layers alone take {dense.fwd_ms:.0f} '
                                 f'ms, so at most {macs / (dense.fwd_ms / 1e3) / rate:.2f}]')
                lines.append(line)
    return lines


def _speed_bounds(ours: Row, off: Row, gemm: Row | None, dense: Row | None) -> str:
    """The speed-ups over the official structure that no implementation exceeds here.

    Every implementation runs VVT-S's linear and conv layers, so the official
    structure's time over theirs bounds the ratio: once with their
    multiply-adds at the machine's GEMM rate, once as timed at their shapes.
    Printed on the eager and the compiled lines alike.
    """
    text = ''
    if gemm and 'dense_macs' in ours.extra:
        floor_fwd, floor_both = dense_floor_ms(
            dict(dense=ours.extra['dense_macs'], stem=ours.extra['stem_macs']),
            gemm.extra['macs_per_s'])
        text += (f' [its linear and conv layers alone at the GEMM rate: {floor_fwd:.0f} / '
                 f'{floor_both:.0f} ms, so at most {ratio(off.fwd_ms, floor_fwd):.2f}x / '
                 f'{ratio(off.fwd_bwd_ms, floor_both):.2f}x on this BLAS]')
    if dense:
        text += (f' [our linear and conv layers alone, timed at their shapes: '
                 f'{dense.fwd_ms:.0f} / {dense.fwd_bwd_ms:.0f} ms, so at most '
                 f'{ratio(off.fwd_ms, dense.fwd_ms):.2f}x / '
                 f'{ratio(off.fwd_bwd_ms, dense.fwd_bwd_ms):.2f}x with them]')
    return text


def highres_checks(rows: list[Row]) -> list[str]:
    """VVT-S needs the least inference memory at the high-resolution size."""
    idx = index(rows)
    lines = []
    for size in sorted({r.size for r in rows if r.suite == 'highres'}):
        mem = {n: idx[('highres', n, size)].fwd_mem_mb for n in ('VVT-S', 'PVTv2-b2', 'Swin-T')
               if ('highres', n, size) in idx}
        if 'VVT-S' not in mem or len(mem) < 2 or any(math.isnan(m) for m in mem.values()):
            continue
        others = {n: m for n, m in mem.items() if n != 'VVT-S'}
        ok = all(mem['VVT-S'] < m for m in others.values())
        note = idx[('highres', 'VVT-S', size)].note.split(';')[0]
        lines.append(f'inference peak memory at {note}: VVT-S {mem["VVT-S"]:.0f} MiB vs '
                     + ', '.join(f'{n} {m:.0f} MiB' for n, m in others.items())
                     + f' (need VVT-S least) {verdict(ok)}')
    return lines


def verdict(ok: bool) -> str:
    return 'PASS' if ok else 'FAIL'


def official_report(rows: list[Row], args: argparse.Namespace) -> str:
    """Ours vs the official structure at each size, and the machine's GEMM rate."""
    official = [r for r in rows if r.suite == 'official']
    gemm = next((r for r in rows if r.name == GEMM_RATE), None)
    if not official:
        return ''
    idx = index(rows)
    header = ['image px', 'name', 'fwd ms', 'fwd+bwd ms', 'fwd x', 'fwd+bwd x',
              'fwd G MAC/s', 'of GEMM rate']
    lines = []
    for r in official:
        off = idx.get(('official', OFFICIAL, r.size))
        rate = r.extra.get('macs', float('nan')) / (r.fwd_ms / 1e3)
        lines.append([str(r.size), r.name, fmt(r.fwd_ms), fmt(r.fwd_bwd_ms),
                      fmt(ratio(off.fwd_ms, r.fwd_ms)) if off else '-',
                      fmt(ratio(off.fwd_bwd_ms, r.fwd_bwd_ms)) if off else '-',
                      fmt(rate / 1e9),
                      fmt(ratio(rate, gemm.extra['macs_per_s'])) if gemm else '-'])
    title = (f'OFFICIAL STRUCTURE: {official[0].note or "VVT-S"}, batch {official[0].batch}, '
             f'same weights, timed in turn, eager unless named torch.compile  (x = '
             f'official-structure eager time / this time; >1: faster than the official '
             f'model)')
    out = [table(title, header, lines)]
    if gemm:
        out.append(f'machine GEMM rate: {gemm.extra["macs_per_s"] / 1e9:.1f} G multiply-adds/s '
                   f'({gemm.name} matmul in {gemm.fwd_ms:.1f} ms; {gemm.note})')
    out.append(f'G MAC/s = VVT-S forward {MAC_CONVENTION}, per second of that row\'s '
               f'forward (the same count for every row)')
    compiled = [r for r in official if r.name == ours_compiled(args.compile_backend)]
    setups = [f'{r.size}px forward {fmt(r.fwd_setup_s)} s, forward+backward '
              f'{fmt(r.fwd_bwd_setup_s)} s' for r in compiled]
    if setups:
        out.append('compile time (first call minus a steady one, cold caches, wall clock): '
                   + '; '.join(setups))
    failed = [f'{r.size}px: {r.note.split("; ", 1)[1]}' for r in compiled if '; ' in r.note]
    if failed:
        out.append('compiled cases that failed: ' + ' | '.join(failed))
    return '\n'.join(out)


def highres_report(rows: list[Row], args: argparse.Namespace) -> str:
    """Time and peak memory of the backbones at the high-resolution size."""
    high = [r for r in rows if r.suite == 'highres']
    if not high:
        return ''
    idx = index(rows)
    header = ['input', 'name', 'infer ms', 'train ms', 'infer MiB', 'train MiB',
              'infer mem x', 'train mem x', 'note']
    lines = []
    for r in high:
        base = idx.get(('highres', 'VVT-S', r.size))
        lines.append([r.note.split(';')[0], r.name, fmt(r.fwd_ms), fmt(r.fwd_bwd_ms),
                      fmt(r.fwd_mem_mb), fmt(r.train_mem_mb),
                      fmt(ratio(r.fwd_mem_mb, base.fwd_mem_mb)) if base else '-',
                      fmt(ratio(r.train_mem_mb, base.train_mem_mb)) if base else '-',
                      '; '.join(r.note.split('; ')[1:])])
    title = (f'HIGH RESOLUTION BACKBONES: batch {high[0].batch}  (infer: no grad; train: '
             f'forward+backward; one timed call each after a warm-up at a quarter side; '
             f'x = memory relative to VVT-S; with_cp changes training only)')
    return table(title, header, lines)


def faster(speed_up: float) -> str:
    """``2.00x faster`` or ``1.32x slower``: no ratio below one to misread."""
    if speed_up >= 1 or math.isnan(speed_up):
        return f'{speed_up:.2f}x faster'
    return f'{1 / speed_up:.2f}x slower'


def deploy_report(rows: list[Row], args: argparse.Namespace) -> str:
    """The deploy table and one line per engine: its speed-up over eager, side by side."""
    deploy = [r for r in rows if r.suite == 'deploy']
    eager = next((r for r in deploy if r.name == EAGER), None)
    if eager is None:
        return ''
    header = ['image px', 'name', 'fwd ms', 'fwd+bwd ms', 'fwd speed-up', 'fwd+bwd speed-up',
              'setup fwd s', 'setup fwd+bwd s', 'note']
    lines = [[str(r.size), r.name, fmt(r.fwd_ms), fmt(r.fwd_bwd_ms),
              fmt(ratio(eager.fwd_ms, r.fwd_ms)), fmt(ratio(eager.fwd_bwd_ms, r.fwd_bwd_ms)),
              fmt(r.fwd_setup_s), fmt(r.fwd_bwd_setup_s), r.note] for r in deploy]
    title = (f'DEPLOY: {args.deploy_label} at {eager.size}px, batch {eager.batch}  '
             f'(speed-up = eager time / this time, engines timed in turn in one loop; setup: '
             f'ONNX export + session, or compile time = first call minus a steady call, '
             f'wall clock, cold caches)')
    out = [table(title, header, lines)]
    by_name = {r.name: r for r in deploy}
    ort = by_name.get(ONNXRUNTIME)
    if ort and not math.isnan(ort.fwd_ms):
        out.append(f'onnxruntime vs PyTorch eager, inference: '
                   f'{faster(ratio(eager.fwd_ms, ort.fwd_ms))} ({fmt(ort.fwd_ms)} vs '
                   f'{fmt(eager.fwd_ms)} ms; export + session {fmt(ort.fwd_setup_s)} s; '
                   f'max |onnxruntime - eager| {ort.extra.get("max_abs_diff", float("nan")):.1e})')
    comp = by_name.get(compiled_name(args.compile_backend))
    if comp:
        parts = []
        for what, key, setup in (('inference', 'fwd_ms', 'fwd_setup_s'),
                                 ('training', 'fwd_bwd_ms', 'fwd_bwd_setup_s')):
            sp = ratio(getattr(eager, key), getattr(comp, key))
            parts.append(f'{what} {faster(sp)} (compile {fmt(getattr(comp, setup))} s)'
                         if not math.isnan(sp) else f'{what} failed (see note)')
        diff = comp.extra.get('max_abs_diff')
        if diff is not None:
            parts.append(f'max |compiled - eager| {diff:.1e}')
        out.append(f'{comp.name} vs eager: ' + ', '.join(parts))
    if args.deploy_reason:
        out.append(args.deploy_reason)
    return '\n'.join(out)


def summary(rows: list[Row], args: argparse.Namespace, env: str) -> str:
    """Everything printed after a run: the environment, the tables and the checks."""
    parts = [env]
    if 'core' in args.suites:
        parts.append(comparison(rows, 'core', 'ours(torch)',
                                f'CORE: B={args.core_batch} heads={args.core_heads} '
                                f'd={args.core_dim}', 'tokens/side'))
    if 'attention' in args.suites:
        parts.append(comparison(rows, 'attention', 'vicinity',
                                f'ATTENTION MODULES: C={args.attn_dims} '
                                f'heads={args.attn_heads} batch={args.attn_batch}', 'image px'))
    if 'backbone' in args.suites:
        parts.append(comparison(rows, 'backbone', 'VVT-S',
                                f'BACKBONES: batch={args.backbone_batch}', 'image px'))
    if 'official' in args.suites:
        parts.append(official_report(rows, args))
    if 'highres' in args.suites:
        parts.append(highres_report(rows, args))
    if 'deploy' in args.suites:
        parts.append(deploy_report(rows, args))
    checks = target_checks(rows, args) or ['(no target applies to the suites and sizes run)']
    parts.append('TARGET CHECKS (PASS/FAIL against the speed and memory targets of the core '
                 'and of VVT-S; each line names its target)\n' + '\n'.join(checks))
    return '\n\n'.join(p for p in parts if p)


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, 'w', newline='') as f:
        fields = [k for k in asdict(rows[0]) if k != 'extra'] if rows else []
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))


def plot(rows: list[Row], path: Path) -> None:
    """Throughput and memory against resolution (the paper's Fig. 8 / Fig. 11 style)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [('attention', 'fwd_bwd_ms', 'attention: tokens/s (fwd+bwd)'),
              ('attention', 'train_mem_mb', 'attention: peak memory MiB (fwd+bwd)'),
              ('backbone', 'fwd_bwd_ms', 'backbone: images/s (fwd+bwd)'),
              ('backbone', 'train_mem_mb', 'backbone: peak memory MiB (training)')]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, (suite, key, title) in zip(axes.flat, panels):
        for name in dict.fromkeys(r.name for r in rows if r.suite == suite):
            pts = [(r.size, getattr(r, key), r) for r in rows
                   if r.suite == suite and r.name == name and not math.isnan(getattr(r, key))]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            if key.endswith('_ms'):
                unit = [(p[2].tokens if suite == 'attention' else 1) * p[2].batch for p in pts]
                ys = [u / (p[1] / 1e3) for u, p in zip(unit, pts)]
            else:
                ys = [p[1] for p in pts]
            ax.plot(xs, ys, marker='o', label=name)
        ax.set_title(title)
        ax.set_xlabel('input resolution (px)')
        # Throughput spans decades; memory on a linear axis shows linear growth.
        ax.set_yscale('log' if key.endswith('_ms') else 'linear')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
