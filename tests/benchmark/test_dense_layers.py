"""The dense-layer replay does the model's linear and conv work, forward and backward."""
from __future__ import annotations

from collections import Counter
from functools import partial

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from vvt_mm.benchmark.dense_layers import DENSE_OPS, DenseReplay, record_dense_calls
from vvt_mm.models.backbones.vvt import VVT

# What a linear or conv layer costs forward and backward, as aten calls.
WORK_OPS = (*DENSE_OPS, torch.ops.aten.convolution_backward.default)


class _DenseWork(TorchDispatchMode):
    """Counts dense aten calls by op and operand shapes and strides (an independent tally)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in WORK_OPS:
            shapes = tuple((tuple(a.shape), a.stride()) for a in args
                           if isinstance(a, torch.Tensor))
            self.seen[(func, shapes)] += 1
        return func(*args, **(kwargs or {}))


class _Toy(nn.Module):
    """A stem conv on the image, a channels-last depthwise conv, linears with and
    without bias: every kind of dense call VVT makes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=4, padding=3)
        self.fc = nn.Linear(8, 16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.gate = nn.Linear(16, 16, bias=False)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(img)
        b, c, h, w = x.shape
        tokens = self.fc(x.flatten(2).transpose(1, 2).contiguous())
        grid = self.dw(tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2))
        return grid, self.gate(tokens.mean(1))  # outputs like a backbone's


def _dense_work(step) -> Counter:
    """The dense aten calls one ``step()`` makes."""
    tally = _DenseWork()
    with tally:
        step()
    return tally.seen


def _forward(model: nn.Module, img: torch.Tensor) -> None:
    with torch.no_grad():
        model(img)


def _forward_backward(model: nn.Module, img: torch.Tensor) -> None:
    sum(o.mean() for o in model(img)).backward()


def test_records_each_dense_call_with_its_layout_and_the_image_operand():
    img = torch.randn(2, 3, 32, 32)
    calls = record_dense_calls(_Toy(), img)
    ops = [c.op for c in calls]
    assert ops.count(torch.ops.aten.convolution.default) == 2
    assert ops.count(torch.ops.aten.addmm.default) == 1
    assert ops.count(torch.ops.aten.mm.default) == 1
    stem, dw = (c for c in calls if c.op is torch.ops.aten.convolution.default)
    assert stem.operands[0].is_image and stem.operands[0].shape == (2, 3, 32, 32)
    assert not dw.operands[0].is_image
    # The depthwise conv's input is the token grid seen channels-last (no copy).
    assert dw.operands[0].stride[1] == 1 and dw.others[-1] == 16


def test_replay_runs_the_models_dense_work_forward_and_backward():
    torch.manual_seed(0)
    for model, img in ((_Toy(), torch.randn(2, 3, 32, 32)),
                       (VVT(arch='tiny'), torch.randn(1, 3, 64, 64))):
        replay = DenseReplay(record_dense_calls(model, img), torch.device('cpu'))
        forward = _dense_work(partial(_forward, model, img))
        assert _dense_work(replay.forward) == forward
        # Forward+backward: the same linear and conv calls and the same
        # gradient GEMMs and conv backwards as autograd runs for the model.
        both = _dense_work(partial(_forward_backward, model, img))
        assert _dense_work(replay.forward_backward) == both
        assert sum(both.values()) > 2 * sum(forward.values())  # the gradients are in it


def test_replay_gives_the_image_no_gradient_and_every_other_operand_one():
    img = torch.randn(1, 3, 32, 32)
    replay = DenseReplay(record_dense_calls(_Toy(), img), torch.device('cpu'))
    replay.forward_backward()
    for call in replay.calls:
        for leaf, operand in zip(replay._leaves[call], call.operands):
            if leaf is None:
                continue
            assert (leaf.grad is None) == operand.is_image
            if leaf.grad is not None:
                assert leaf.grad.shape == leaf.shape
