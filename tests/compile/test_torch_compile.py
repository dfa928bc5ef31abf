"""torch.compile of every backbone and token mixer: one graph for all sizes, eager's numbers.

Each case compiles with ``fullgraph=True`` (a graph break raises) and
``dynamic=True``, runs three input sizes with ``error_on_recompile`` set after
the first, and compares outputs (and, in train mode, input and parameter
gradients) with the eager model. The models are tiny and most cases use the
``aot_eager`` backend (dynamo + AOTAutograd, no code generation), so the
file runs in minutes on two cores; one case compiles a two-stage VVT with
inductor (inference at three sizes, training at one: see that case).
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from torch import nn
from torch._dynamo.utils import counters

from vvt_mm import LVT, VVT, LocalViT, LocalViTPVT, ViTAEv2VSA
from vvt_mm.engine.compile_hook import inductor_config_for
from vvt_mm.models.attention.builder import attention_names, mixers_taking

# Non-square sizes whose stage maps are not all multiples of the reductions
# (18x26 at stride 4, 3x4 at stride 32), and none of 1 (dynamo specialises 1).
SIZES = [(64, 96), (72, 104), (112, 80)]
BATCH = 2

VVT_ARCH = dict(embed_dims=[16, 24, 32, 48], num_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2])
# Two stages: a stride-2 convolution between two mixers (its input gradient is what
# inductor's convolution lowering specialises, see the inductor case).
VVT2_ARCH = dict(embed_dims=[32, 64], num_heads=[1, 2], depths=[1, 1], mlp_ratios=[2, 2])
# One two-head stage is enough to exercise a token mixer (and compiles in half the time).
MIXER_ARCH = dict(embed_dims=[32], num_heads=[2], depths=[1], mlp_ratios=[2])
PVT_SR = [4, 2, 2, 1]

BACKBONES: dict[str, Callable[[], nn.Module]] = {
    'VVT': lambda: VVT(arch=VVT_ARCH, drop_path_rate=0.),
    'VVT-sr': lambda: VVT(arch=VVT2_ARCH, sr_ratios=[4, 2], out_indices=(0, 1),
                          drop_path_rate=0.),
    'VVT-with_cp': lambda: VVT(arch=VVT2_ARCH, with_cp=True, out_indices=(0, 1),
                               drop_path_rate=0.),
    'LocalViT': lambda: LocalViT(
        arch=dict(embed_dims=8, num_heads=2, depth=2, mlp_ratio=2, channel_attn='se',
                  se_reduction=4), img_size=64, out_indices=(0, 1), drop_path_rate=0.),
    'LocalViTPVT': lambda: LocalViTPVT(
        arch=dict(embed_dims=[4, 8, 8, 16], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
                  mlp_ratios=[2, 2, 2, 2], sr_ratios=PVT_SR), img_size=64, drop_path_rate=0.),
    'ViTAEv2VSA': lambda: ViTAEv2VSA(
        # Every reduction cell, one normal cell (the cells of later stages are alike).
        arch=dict(embed_dims=[4, 4, 8, 8], token_dims=[8, 8, 16, 16], depths=[1, 0, 0, 0],
                  nc_heads=[1, 2, 2, 2], rc_heads=[1, 1, 2, 2], nc_groups=[1, 2, 2, 4],
                  rc_groups=[1, 2, 2, 2], wide_pcm=False), drop_path_rate=0.),
    'LVT': lambda: LVT(
        arch=dict(embed_dims=[4, 4, 6, 8], num_heads=[1, 2, 2, 2], depths=[1, 1, 1, 1],
                  mlp_ratios=[2, 2, 2, 2], sr_ratios=PVT_SR,
                  mixers=['csa', 'rasa', 'rasa', 'rasa']), drop_path_rate=0.),
}

# Every other registered mixer ('vicinity' is the VVT cases above).
MIXERS = ['vicinity_no_locality', 'softmax', 'spatial_reduction', 'performer', 'linformer',
          'cosformer', 'gc', 'csa', 'rasa', 'vsa']
# VSA windows of 4 (official: 7): several windows and a padded edge on the 16x24 map.
MIXER_OPTIONS = dict(vsa=dict(window_size=4))


def build_mixer_vvt(mixer: str) -> VVT:
    sr_ratios = [2] if mixer in mixers_taking('sr_ratio') else None
    return VVT(arch=MIXER_ARCH, attn_cfg=dict(type=mixer, **MIXER_OPTIONS.get(mixer, {})),
               sr_ratios=sr_ratios,
               out_indices=(0, ), drop_path_rate=0.)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each case compiles from scratch and counts only its own graphs."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def assert_close_to_eager(got: torch.Tensor, want: torch.Tensor, what: str,
                          atol: float = 1e-5) -> None:
    """Equal to fp32 rounding: ``rtol`` 1e-4 and ``atol`` relative to the tensor's scale."""
    scale = want.abs().max().item() + 1e-12
    torch.testing.assert_close(got, want, rtol=1e-4, atol=atol * scale,
                               msg=lambda m: f'{what}: {m}')


def check_compiled_like_eager(model: nn.Module, train: bool, backend: str = 'aot_eager',
                              sizes: list[tuple[int, int]] = SIZES) -> None:
    """One graph compiled once for all ``sizes``; outputs (and gradients) as eager."""
    torch.manual_seed(0)
    model.train(train)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=True)
    params = [p for p in model.parameters() if p.requires_grad]
    for index, (h, w) in enumerate(sizes):
        x = torch.randn(BATCH, 3, h, w)
        results = []
        for run in (model, compiled):
            model.zero_grad(set_to_none=True)
            inp = x.clone().requires_grad_(train)
            with torch.set_grad_enabled(train):
                if index and run is compiled:
                    with torch._dynamo.config.patch(error_on_recompile=True):
                        outs = run(inp)
                else:
                    outs = run(inp)
                if train:
                    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
                        for o in outs).backward()
            grads = [inp.grad] + [p.grad for p in params] if train else []
            results.append(([o.detach() for o in outs], grads))
        (want_outs, want_grads), (got_outs, got_grads) = results
        for i, (got, want) in enumerate(zip(got_outs, want_outs)):
            assert_close_to_eager(got, want, f'{h}x{w} output {i}')
        for i, (got, want) in enumerate(zip(got_grads, want_grads)):
            name = 'input' if i == 0 else f'parameter {i - 1}'
            assert (got is None) == (want is None), f'{h}x{w} {name} gradient'
            if want is not None:
                # Gradients sum over batch and tokens in another order: 1e-4.
                assert_close_to_eager(got, want, f'{h}x{w} {name} gradient', atol=1e-4)
    assert counters['stats']['unique_graphs'] == 1, dict(counters['stats'])


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbone_compiles_to_one_dynamic_graph_equal_to_eager(name, train):
    if name == 'VVT-with_cp' and not train:
        pytest.skip('activation checkpointing only acts when gradients are wanted')
    check_compiled_like_eager(BACKBONES[name](), train)


@pytest.mark.parametrize('name', ['LocalViT', 'LocalViTPVT'])
def test_the_stored_position_grid_and_other_sizes_share_one_graph(name):
    """First at the size the position embeddings were made for (64 px: no resize in
    eager), then at two others. Without duck sizing, as TorchCompileHook runs:
    with it the square first size alone would tie H to W."""
    import torch.fx.experimental._config as fx_config
    with fx_config.patch(use_duck_shape=False):
        check_compiled_like_eager(BACKBONES[name](), train=False,
                                  sizes=[(64, 64), (64, 96), (96, 80)])


def test_the_mixer_cases_cover_every_registered_mixer():
    registered = {min(aliases, key=len) for aliases in attention_names().values()}
    assert registered == {*MIXERS, 'vicinity'}


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('mixer', MIXERS)
def test_every_vvt_token_mixer_compiles_to_one_dynamic_graph_equal_to_eager(mixer, train):
    check_compiled_like_eager(build_mixer_vvt(mixer), train)


def test_inductor_compiles_a_vvt_whose_outputs_and_gradients_equal_eager(tmp_path,
                                                                        monkeypatch):
    """Generated code, not just tracing: the separable op sits in inductor's graph.

    With the inductor settings :class:`~vvt_mm.engine.TorchCompileHook` gives
    a CPU model (``strict_output_strides``: without it inductor in torch 2.14
    cannot order the symbolic strides of views it saves for backward, ``cannot
    determine truth value of Relational``; and the channels-last layout forced
    on). Inference: one dynamic graph for the three
    sizes. Training compiles at one size: inductor's lowering of
    ``aten.convolution_backward`` (torch 2.14) turns the strides of a
    convolution's input gradient into integers (``guard_int_seq`` in
    ``convolution_backward_lowering``), so each new size recompiles there,
    whatever the model; ``aot_eager`` above compiles the same backward graph
    once for every size.
    """
    # A cache of its own: inductor's on-disk caches (/tmp/torchinductor_<user>)
    # are not keyed on a custom op's fake function, so code compiled against an
    # older version of ours (bool clamp masks, now uint8) would be reused.
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor_cache'))
    model = VVT(arch=VVT2_ARCH, out_indices=(0, 1), drop_path_rate=0.)
    with torch._inductor.config.patch(inductor_config_for('cpu')):
        check_compiled_like_eager(model, train=False, backend='inductor')
        torch._dynamo.reset()
        counters.clear()
        check_compiled_like_eager(model, train=True, backend='inductor', sizes=SIZES[:1])
