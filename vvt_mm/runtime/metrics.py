"""Map the mm 0.x ``--eval mIoU`` habit onto mmengine evaluators."""
from __future__ import annotations

from mmengine.config import Config

_SEG_METRICS = {'mIoU', 'mDice', 'mFscore'}
_DET_METRICS = {'bbox', 'segm', 'proposal'}
_CLS_METRICS = {'accuracy': dict(type='Accuracy', topk=(1, 5))}


def _build_evaluator(scope: str, metrics: list[str]) -> dict:
    unknown = [m for m in metrics if m not in _SEG_METRICS | _DET_METRICS | set(_CLS_METRICS)]
    if unknown:
        raise ValueError(f'--eval {" ".join(unknown)}: unknown metric; use mIoU/mDice/mFscore '
                         '(segmentation), bbox/segm/proposal (detection) or accuracy '
                         '(classification)')
    if scope == 'mmseg':
        if not set(metrics) <= _SEG_METRICS:
            raise ValueError(f'--eval {metrics} is not a segmentation metric; use mIoU, '
                             'mDice or mFscore')
        return dict(type='IoUMetric', iou_metrics=list(metrics))
    if scope == 'mmdet':
        if not set(metrics) <= _DET_METRICS:
            raise ValueError(f'--eval {metrics} is not a detection metric; use bbox or segm')
        return {'metric': list(metrics)}
    if scope == 'mmpretrain':
        if metrics != ['accuracy']:
            raise ValueError(f'--eval {metrics}: classification supports "accuracy"')
        return _CLS_METRICS['accuracy']
    raise ValueError(f'--eval is not supported for default_scope={scope!r}')


def apply_eval_metrics(cfg: Config, metrics: list[str]) -> None:
    """Set ``cfg.test_evaluator`` from ``--eval`` names (in place)."""
    evaluator = _build_evaluator(cfg.get('default_scope', ''), metrics)
    if cfg.get('default_scope') == 'mmdet':
        # Keep the COCO annotation file etc. of the config's evaluator.
        base = cfg.test_evaluator
        bases = base if isinstance(base, list) else [base]
        for item in bases:
            item.update(evaluator)
        return
    cfg.test_evaluator = evaluator
