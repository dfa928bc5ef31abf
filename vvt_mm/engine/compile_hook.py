"""A hook that lets mmengine's ``compile=`` config option train.

With ``compile=True`` (or a dict of ``torch.compile`` options) mmengine 0.10
compiles the model's whole ``train_step``: data preprocessor, forward, loss,
backward and the optimizer step. Its optimizer constructor, given a
``paramwise_cfg`` (our segmentation and detection configs have one), stores
the param groups in the optimizer config, and mmengine's ``ConfigDict``
turns the plain dicts into ``ConfigDict`` on the way in. Dynamo cannot trace
an optimizer step over such groups: the first iteration fails deep inside it
(``'UserDefinedDictVariable' object has no attribute 'items'``). Before the
first iteration this hook makes every param group a plain dict again (same
keys and values, same parameters), so the compiled step traces.

With the inductor backend (the default) it also sets inductor's
``strict_output_strides``: once shapes are dynamic (``dynamic=True``, or the
second input size under the default automatic dynamic), inductor (torch
2.14) fails to order the symbolic strides of views it saves for backward
(``cannot determine truth value of Relational``); exact strides need no
ordering. On CPU it also forces inductor's channels-last layout
optimisation (see :data:`CPU_INDUCTOR_CONFIG`). With any backend it turns off
dynamo's duck sizing (see ``before_train``).

    custom_hooks = [dict(type='TorchCompileHook')]

is in our configs and inert without ``compile``; ``tools/train.py`` adds it
to a config that sets ``compile`` but lacks it.
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

__all__ = ['CPU_INDUCTOR_CONFIG', 'INDUCTOR_CONFIG', 'TorchCompileHook', 'add_compile_hook',
           'inductor_config_for', 'plain_param_groups']

# torch._inductor.config settings the hook applies when the backend is inductor.
INDUCTOR_CONFIG = dict(strict_output_strides=True)
# ... and in addition when the model is on the CPU. Inductor decides per graph
# whether to lay convolutions out channels-last, and only a graph with
# convolution nodes qualifies: a training step's backward graph holds
# convolution_backward nodes only, so the depthwise convolutions' backward ran
# NCHW, slower than eager (VVT-S 512^2 forward+backward: 1.24x eager's time,
# 0.94x forced).
CPU_INDUCTOR_CONFIG = dict(force_layout_optimization=True)


def inductor_config_for(device_type: str) -> dict[str, object]:
    """The ``torch._inductor.config`` settings for a model on ``device_type``."""
    return {**INDUCTOR_CONFIG, **(CPU_INDUCTOR_CONFIG if device_type == 'cpu' else {})}


def plain_param_groups(optim_wrapper) -> int:
    """Replace dict-subclass param groups by plain dicts, in place; return how many."""
    wrappers = (optim_wrapper.optim_wrappers.values()
                if isinstance(optim_wrapper, OptimWrapperDict) else [optim_wrapper])
    count = 0
    for wrapper in wrappers:
        groups = wrapper.optimizer.param_groups
        for i, group in enumerate(groups):
            if type(group) is not dict:
                groups[i] = dict(group)
                count += 1
    return count


def add_compile_hook(cfg) -> bool:
    """Append :class:`TorchCompileHook` to a config that sets ``compile`` but lacks it."""
    if not cfg.get('compile'):
        return False
    hooks = list(cfg.get('custom_hooks') or [])
    if any(h.get('type') in ('TorchCompileHook', TorchCompileHook) for h in hooks):
        return False
    cfg.custom_hooks = hooks + [dict(type='TorchCompileHook')]
    return True


@HOOKS.register_module()
class TorchCompileHook(Hook):
    """Prepare the optimizer for mmengine's compiled ``train_step`` (see the module doc)."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        compile_cfg = runner.cfg.get('compile')
        if not compile_cfg:
            return
        count = plain_param_groups(runner.optim_wrapper)
        if count:
            print_log(f'compile: {count} optimizer param group(s) made plain dicts '
                      '(dynamo cannot trace an optimizer step over ConfigDict groups)',
                      logger='current')
        # Our backbones take any H and W, but dynamo's duck sizing gives equal
        # sizes one symbol: a square first batch ties H to W, and the first
        # non-square input (multi-scale resize, another aspect) compiles again.
        import torch.fx.experimental._config as fx_config
        fx_config.use_duck_shape = False
        backend = compile_cfg.get('backend', 'inductor') if isinstance(compile_cfg, dict) \
            else 'inductor'
        if backend == 'inductor':
            import torch._inductor.config
            for key, value in inductor_config_for(_device_type(runner.model)).items():
                setattr(torch._inductor.config, key, value)


def _device_type(model) -> str:
    param = next(model.parameters(), None)
    return param.device.type if param is not None else 'cpu'
