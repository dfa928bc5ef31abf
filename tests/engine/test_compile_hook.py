"""TorchCompileHook: mmengine's compiled train_step trains with paramwise_cfg param groups."""
from __future__ import annotations

import copy
import uuid
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.runner import Runner
from torch.utils.data import DataLoader, Dataset

from vvt_mm.engine import TorchCompileHook, add_compile_hook, plain_param_groups
from vvt_mm.engine.compile_hook import CPU_INDUCTOR_CONFIG, INDUCTOR_CONFIG, inductor_config_for


class Pairs(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict:
        x = torch.tensor([i / 16, 1 - i / 16])
        return dict(inputs=x, labels=x.sum() * 0.5)


class Regression(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, labels=None, mode='loss'):
        pred = self.head(self.norm(self.linear(inputs))).squeeze(-1)
        return dict(loss_mse=(pred - labels).pow(2).mean())


# As Runner.from_cfg passes it: a ConfigDict, whose paramwise_cfg groups become ConfigDict.
OPTIM_WRAPPER = ConfigDict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.1),
                           paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))


def runner(tmp_path, compile_cfg, hooks=()) -> Runner:
    torch.manual_seed(0)
    cfg = dict(
        model=Regression(), work_dir=str(tmp_path), experiment_name=uuid.uuid4().hex[:8],
        train_dataloader=DataLoader(Pairs(), batch_size=4, shuffle=False),
        optim_wrapper=copy.deepcopy(OPTIM_WRAPPER),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=3),
        train_cfg=dict(by_epoch=False, max_iters=3),
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks), randomness=dict(seed=0), default_scope='mmengine')
    return Runner(**cfg, cfg=dict(compile=compile_cfg) if compile_cfg else None)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each case compiles from scratch; the process-wide settings a hook makes are undone."""
    import torch._inductor.config as inductor_config
    import torch.fx.experimental._config as fx_config
    torch._dynamo.reset()
    saved = {key: getattr(inductor_config, key) for key in inductor_config_for('cpu')}
    with fx_config.patch(use_duck_shape=fx_config.use_duck_shape), \
            inductor_config.patch(saved):
        yield
    torch._dynamo.reset()


def test_mmengine_builds_paramwise_groups_as_config_dicts():
    """Why the hook exists (if mmengine stops doing this, the hook is a no-op)."""
    groups = build_optim_wrapper(Regression(), copy.deepcopy(OPTIM_WRAPPER)).param_groups
    assert any(isinstance(g, ConfigDict) for g in groups)


def test_compiled_train_step_with_paramwise_groups_trains_like_eager(tmp_path):
    eager = runner(tmp_path / 'eager', None)
    eager.train()
    compiled = runner(tmp_path / 'compiled', dict(backend='aot_eager'),
                      hooks=[dict(type='TorchCompileHook')])
    compiled.train()
    groups = compiled.optim_wrapper.optimizer.param_groups
    assert all(type(g) is dict for g in groups)
    assert {g.get('weight_decay') for g in groups} == {0.0, 0.1}  # paramwise_cfg kept
    for (name, want), got in zip(eager.model.state_dict().items(),
                                 compiled.model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_plain_param_groups_keeps_keys_values_and_parameters():
    params = [nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))]
    optimizer = torch.optim.SGD([dict(params=[params[0]]), dict(params=[params[1]])], lr=0.1)
    optimizer.param_groups[0] = ConfigDict(optimizer.param_groups[0], lr_mult=2.)
    before = [dict(g) for g in optimizer.param_groups]
    assert plain_param_groups(OptimWrapper(optimizer)) == 1
    assert all(type(g) is dict for g in optimizer.param_groups)
    assert [g.keys() for g in optimizer.param_groups] == [g.keys() for g in before]
    assert optimizer.param_groups[0]['params'][0] is params[0]


def test_the_hook_is_inert_without_compile_and_added_only_when_missing():
    cfg = Config(dict(custom_hooks=[dict(type='NonFiniteLossHook')]))
    assert not add_compile_hook(cfg)
    cfg.compile = True
    assert add_compile_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['NonFiniteLossHook', 'TorchCompileHook']
    assert not add_compile_hook(cfg)
    assert TorchCompileHook.priority == 'VERY_HIGH'


@pytest.mark.parametrize('compile_cfg,strict', [(True, True), (dict(dynamic=True), True),
                                                (dict(backend='aot_eager'), False)])
def test_the_hook_asks_inductor_for_exact_output_strides(compile_cfg, strict):
    import torch._inductor.config as inductor_config
    import torch.fx.experimental._config as fx_config
    model = nn.Linear(1, 1)
    fake_runner = SimpleNamespace(cfg=Config(dict(compile=compile_cfg)), model=model,
                                  optim_wrapper=OptimWrapper(torch.optim.SGD(
                                      model.parameters(), lr=0.1)))
    # torch's config modules restore their own patches (pytest's monkeypatch
    # deletes such a setting on undo).
    with inductor_config.patch(strict_output_strides=False, force_layout_optimization=False), \
            fx_config.patch(use_duck_shape=True):
        TorchCompileHook().before_train(fake_runner)
        assert inductor_config.strict_output_strides is strict
        # A CPU model: convolutions channels-last in the backward graph too.
        assert inductor_config.force_layout_optimization is strict
        assert fx_config.use_duck_shape is False  # any backend


def test_only_a_cpu_model_gets_the_cpu_inductor_settings():
    assert inductor_config_for('cuda') == INDUCTOR_CONFIG
    assert inductor_config_for('cpu') == {**INDUCTOR_CONFIG, **CPU_INDUCTOR_CONFIG}
    import torch._inductor.config as inductor_config
    for key, value in inductor_config_for('cpu').items():  # names torch still has
        assert type(getattr(inductor_config, key)) is type(value)


def test_without_duck_sizing_a_square_then_a_non_square_image_share_one_graph():
    """What the hook's duck-sizing switch buys: no second compile after a square crop."""
    import torch._dynamo
    import torch.fx.experimental._config as fx_config
    from torch._dynamo.utils import counters

    def image_means(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    for duck, compiles in ((True, 2), (False, 1)):
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(image_means, backend='eager', dynamic=True)
        with fx_config.patch(use_duck_shape=duck):
            for h, w in ((32, 32), (32, 48)):
                compiled(torch.randn(2, 3, h, w))
        assert counters['stats']['unique_graphs'] == compiles, (duck, dict(counters['stats']))
    torch._dynamo.reset()
