"""Stop training at the first non-finite loss, before the poisoned state is checkpointed.

A NaN/Inf loss back-propagates NaN gradients and the optimizer writes NaN into
every weight it touches; mmengine keeps going, logs ``loss: nan`` for the rest
of the schedule and overwrites good checkpoints with useless ones. This hook
looks at the loss terms of each iteration (the ``log_vars`` that
``train_step`` returns) after the optimizer step and, if one is not finite,
raises :class:`NonFiniteLossError` naming the iteration and the term. It runs
before ``CheckpointHook`` in the same iteration, so the poisoned weights are
never saved and ``--resume`` continues from the last good checkpoint.

Under a *dynamic* loss scaler (mmengine's ``AmpOptimWrapper`` with
``loss_scale='dynamic'``, fp16 on GPUs) an overflow is routine: the scaler
skips that optimizer step and halves the scale, the weights stay finite.
There the hook counts the skipped steps (``skipped_steps`` in the log and
``vis_data/scalars.json``) instead of stopping, and only stops when
``max_consecutive_skips`` steps in a row were skipped (the scale then
collapses towards zero: the model has diverged).

In a distributed run the ranks agree (one tiny all-reduce per iteration), so
every rank stops at the same iteration with the same message.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

__all__ = ['NonFiniteLossError', 'NonFiniteLossHook']


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; training stopped at that iteration."""


def _dynamic_loss_scaler(optim_wrapper):
    """The ``GradScaler`` of an optim wrapper with dynamic loss scaling, else None."""
    scaler = getattr(optim_wrapper, 'loss_scaler', None)
    if scaler is None or not hasattr(scaler, 'get_scale'):
        return None
    if hasattr(scaler, 'is_enabled') and not scaler.is_enabled():
        return None
    # mmengine's static scale (loss_scale=<float>) resets the scale every step.
    if getattr(optim_wrapper, '_scale_update_param', None) is not None:
        return None
    if hasattr(scaler, 'get_backoff_factor') and scaler.get_backoff_factor() >= 1:
        return None
    return scaler


def _loss_terms(outputs) -> dict[str, torch.Tensor]:
    """The terms of ``log_vars`` that mmengine sums into the loss (names with 'loss')."""
    if not isinstance(outputs, Mapping):
        return {}
    return {k: v for k, v in outputs.items()
            if 'loss' in k and isinstance(v, torch.Tensor)}


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` on a NaN/Inf loss; count AMP-skipped steps.

    Args:
        max_consecutive_skips: under a dynamic loss scaler, stop after this
            many optimizer steps in a row were skipped; ``None`` never stops.
    """

    # Before LoggerHook (BELOW_NORMAL: the skip count of an iteration is in its
    # own log line) and CheckpointHook (VERY_LOW: a poisoned state is never saved).
    priority = 'NORMAL'

    def __init__(self, max_consecutive_skips: int | None = 100) -> None:
        if max_consecutive_skips is not None and max_consecutive_skips < 1:
            raise ValueError(f'max_consecutive_skips must be >= 1 or None, got '
                             f'{max_consecutive_skips}')
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._scale: float | None = None

    def before_train(self, runner) -> None:
        scaler = _dynamic_loss_scaler(runner.optim_wrapper)
        self._scale = scaler.get_scale() if scaler is not None else None
        # A resumed run keeps counting where the checkpointed one stopped.
        self.skipped_steps = int(runner.message_hub.get_info('skipped_steps', 0) or 0)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        terms = _loss_terms(outputs)
        bad = self._agreed_non_finite(terms)
        iteration = runner.iter + 1
        scaler = _dynamic_loss_scaler(runner.optim_wrapper)
        if scaler is not None:
            scale = scaler.get_scale()
            skipped = self._scale is not None and scale < self._scale
            previous, self._scale = self._scale, scale
            if skipped:
                self._count_skip(runner, iteration, bad, previous, scale)
                return
            self.consecutive_skips = 0
            runner.message_hub.update_scalar('train/skipped_steps', self.skipped_steps)
        if bad:
            raise NonFiniteLossError(self._message(runner, iteration, terms, bad))

    def _count_skip(self, runner, iteration: int, bad: dict[str, list[int]],
                    previous: float, scale: float) -> None:
        self.skipped_steps += 1
        self.consecutive_skips += 1
        runner.message_hub.update_info('skipped_steps', self.skipped_steps)
        runner.message_hub.update_scalar('train/skipped_steps', self.skipped_steps)
        cause = f'non-finite {", ".join(_terms(bad))}' if bad else 'non-finite gradients'
        print_log(f'iteration {iteration}: the dynamic loss scaler skipped the optimizer '
                  f'step ({cause}); loss scale {previous:g} -> {scale:g}; '
                  f'{self.skipped_steps} step(s) skipped so far', logger='current',
                  level=logging.WARNING)
        limit = self.max_consecutive_skips
        if limit is not None and self.consecutive_skips >= limit:
            raise NonFiniteLossError(
                f'iteration {iteration}: the dynamic loss scaler skipped {limit} optimizer '
                f'steps in a row (loss scale now {scale:g}): the model has diverged; '
                f'{self._resume_hint(runner)}')

    def _agreed_non_finite(self, terms: dict[str, torch.Tensor]) -> dict[str, list[int]]:
        """``{term: [ranks]}`` of the non-finite terms on any rank."""
        names = list(terms)
        if not names:
            return {}
        # The terms live on the device the backend reduces (CPU for gloo, GPU for nccl).
        local = torch.stack([(~torch.isfinite(v.detach())).any()
                             for v in terms.values()]).float()
        world = _world_size()
        if world == 1:
            return {n: [0] for n, f in zip(names, local.tolist()) if f}
        flags = local.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if not flags.any():
            return {}
        # Rare path: one more all-reduce to name the ranks.
        per_rank = torch.zeros(world, len(names), device=local.device)
        per_rank[dist.get_rank()] = local
        dist.all_reduce(per_rank)
        return {n: per_rank[:, i].nonzero().flatten().tolist()
                for i, n in enumerate(names) if flags[i]}

    def _message(self, runner, iteration: int, terms: dict[str, torch.Tensor],
                 bad: dict[str, list[int]]) -> str:
        if _world_size() > 1:
            named = ', '.join(f'{name} (on rank {_ranks(bad[name])})' for name in _terms(bad))
            whose = f'rank {dist.get_rank()}\'s'
        else:
            named = ', '.join(f'{name} ({_value_text(terms[name])})' for name in _terms(bad))
            whose = 'the'
        values = ', '.join(f'{k}: {_value_text(v)}' for k, v in terms.items())
        return (f'iteration {iteration}: non-finite loss {named}; {whose} loss terms: '
                f'{values}. Training stopped before this state was checkpointed; '
                f'{self._resume_hint(runner)}')

    @staticmethod
    def _resume_hint(runner) -> str:
        last = runner.message_hub.get_info('last_ckpt')
        if last:
            return f'the last good checkpoint is {last} (continue with --resume)'
        return 'no checkpoint was written yet'


def _terms(bad: dict[str, list[int]]) -> list[str]:
    """The bad terms to name: the components, not also the total they sum into."""
    return [k for k in bad if k != 'loss'] or list(bad)


def _value_text(value: torch.Tensor) -> str:
    number = float(value.detach().float().mean())
    return str(number) if not math.isfinite(number) else f'{number:.4g}'


def _ranks(ranks: list[int]) -> str:
    return ', '.join(map(str, ranks)) if ranks else '?'
