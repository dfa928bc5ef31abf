"""tools/analysis/get_flops.py: fvcore-style counts that match the VVT paper."""
from __future__ import annotations

import pytest

from vvt_mm.testing import ROOT, load_tool

get_flops = load_tool('tools/analysis/get_flops.py')

DIMS, HEADS = [96, 160, 320, 512], [1, 2, 5, 8]
ARCHS = {'t': ([2, 2, 2, 2], [8, 8, 4, 4]), 's': ([3, 3, 9, 3], [8, 8, 4, 4]),
         'm': ([3, 3, 27, 3], [8, 8, 4, 4]), 'l': ([4, 4, 36, 4], [4, 4, 4, 4])}
PAPER_GFLOPS = {'t': 3.0, 's': 5.6, 'm': 9.4, 'l': 10.8}  # VVT paper, Table II


def vvt_classifier_flops(depths, mlp_ratios, h, w, attn='reference'):
    """Multiply-adds of a VVT ImageClassifier, written out layer by layer.

    fvcore's conventions: a LayerNorm costs 5 per element, pooling 1 per input
    element, element-wise ops 0. Vicinity attention (reference form) costs
    ``8 N d^2`` per head: ``K'^T V`` and ``Q' (K'^T V)`` with ``4d``-wide features;
    the separable form about ``4 N d^2``.
    """
    total, cin = 0, 3
    for i, (depth, ratio) in enumerate(zip(depths, mlp_ratios)):
        k, s, p = (7, 4, 3) if i == 0 else (3, 2, 1)
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        n, c = h * w, DIMS[i]
        inner = c // 2
        hd = inner // HEADS[i]
        total += k * k * cin * c * n + 5 * n * c  # patch embed conv + LN
        block = 5 * n * c + 3 * n * c * inner  # norm1, q/k/v
        if attn == 'reference':
            block += 8 * n * hd * hd * HEADS[i]
        else:  # separable: row/column sums of k(v|1)^T, their weighting, queries
            block += 2 * (2 * n + 2 * (h + w)) * hd * (hd + 1) * HEADS[i]
        block += n * inner * c + 2 * c * c  # out_proj, FPC gate on the mean token
        block += 5 * n * c + 2 * n * c * ratio * c + 9 * ratio * c * n  # norm2, FFN
        total += depth * block + 5 * n * c  # blocks, stage norm
        cin = c
    return total + h * w * 512 + 512 * 1000  # GAP, head


def test_vvt_t_flops_match_the_layer_by_layer_count_and_the_paper(capsys):
    result = get_flops.main([str(ROOT / 'configs' / 'vvt_t_in1k.py')])
    expected = vvt_classifier_flops(*ARCHS['t'], 224, 224)
    assert result['flops'] == expected
    assert round(result['flops'] / 1e9, 1) == PAPER_GFLOPS['t']
    assert round(result['params'] / 1e6, 2) == 12.88
    out = capsys.readouterr().out
    assert 'FLOPs: 3.00 G' in out and 'Params: 12.88 M' in out
    assert '1 multiply-add = 1 FLOP' in out


@pytest.mark.parametrize('arch', 'sml')
def test_layer_by_layer_count_gives_the_papers_gflops_for_every_size(arch):
    """The formula the tool is checked against reproduces Table II for S/M/L too."""
    assert round(vvt_classifier_flops(*ARCHS[arch], 224, 224) / 1e9, 1) == PAPER_GFLOPS[arch]


def test_as_built_counts_the_separable_path_with_about_half_the_attention_macs():
    args = [str(ROOT / 'configs' / 'vvt_t_in1k.py'), '--shape', '64', '96']
    reference = get_flops.main(args)
    as_built = get_flops.main(args + ['--attn-impl', 'as-built'])
    assert reference['flops'] == vvt_classifier_flops(*ARCHS['t'], 64, 96)
    assert as_built['flops'] == vvt_classifier_flops(*ARCHS['t'], 64, 96, attn='separable')
    assert as_built['flops'] < reference['flops']


def test_segmentor_and_detector_configs_are_counted_at_the_given_shape(capsys):
    seg = get_flops.main([str(ROOT / 'configs' / 'fpn_vvt_t_ade20k.py'), '--shape', '64'])
    assert seg['input_shape'] == (64, 64) and seg['flops'] > 0
    det = get_flops.main([str(ROOT / 'configs' / 'retinanet_vvt_t_fpn_1x_coco.py'),
                          '--shape', '100', '150'])
    assert det['input_shape'] == (128, 160)  # padded to 32 like mmdet's preprocessor
    assert 'padded from 100x150' in capsys.readouterr().out
    # The backbone part is the same function as in the classifier: more FLOPs overall.
    assert det['flops'] > vvt_classifier_flops(*ARCHS['t'], 128, 160) - 512 * 1000


def test_bad_shape_and_missing_config_exit_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match='does not exist'):
        get_flops.main([str(tmp_path / 'nope.py')])
    with pytest.raises(SystemExit, match='H W'):
        get_flops.main([str(ROOT / 'configs' / 'vvt_t_in1k.py'), '--shape', '1', '2', '3'])
