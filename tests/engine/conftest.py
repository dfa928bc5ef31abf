"""A toy mmengine training run (a linear regression) for in-process hook tests."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import Runner
from torch.utils.data import DataLoader, Dataset


class ToyData(Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        x = torch.tensor([i / 64, 1 - i / 64])
        return dict(inputs=x, labels=x.sum() * 0.5)


class ToyModel(BaseModel):
    """``loss_mse``; ``poison`` maps 1-based iterations to the value the loss becomes."""

    def __init__(self, poison: dict[int, float] | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.poison = poison or {}

    def forward(self, inputs, labels=None, mode='loss'):
        loss = (self.linear(inputs).squeeze(-1) - labels).pow(2).mean()
        value = self.poison.get(MessageHub.get_current_instance().get_info('iter') + 1)
        if value is not None:
            loss = loss * value
        return dict(loss_mse=loss)


class CPUGradScalerOptimWrapper(AmpOptimWrapper):
    """mmengine's AmpOptimWrapper (dynamic loss scaling) on a CPU: fp32 compute, a real
    ``torch.amp.GradScaler('cpu')``. mmengine itself refuses AMP without a GPU."""

    def __init__(self, init_scale: float = 2.**10, **kwargs) -> None:
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.cast_dtype = None
        self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)

    def optim_context(self, model):
        return OptimWrapper.optim_context(self, model)


def toy_runner(work_dir: Path, max_iters: int = 6, custom_hooks=(), poison=None,
               optim_wrapper: dict | OptimWrapper | None = None, resume: bool = False,
               load_from: str | None = None, interval: int = 2) -> Runner:
    torch.manual_seed(0)  # the model is built before the Runner seeds
    model = ToyModel(poison)
    if optim_wrapper is None:
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
    elif optim_wrapper == 'amp':
        optim_wrapper = CPUGradScalerOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    return Runner(
        model=model, work_dir=str(work_dir), experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=DataLoader(ToyData(), batch_size=4, shuffle=False),
        optim_wrapper=optim_wrapper,
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=interval),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(custom_hooks), log_processor=dict(by_epoch=False, window_size=1),
        randomness=dict(seed=0), resume=resume, load_from=load_from,
        default_scope='mmengine')


@pytest.fixture
def make_toy_runner():
    """:func:`toy_runner`: ``make_toy_runner(work_dir, max_iters=6, custom_hooks=(),
    poison={iteration: factor}, optim_wrapper='amp'|dict, resume=False, load_from=None)``.

    Runs in one work dir within the same second share mmengine's log folder: resume
    into another work dir (``load_from=<checkpoint>, resume=True``) to compare logs."""
    return toy_runner
