"""CPU launch glue and the --eval mapping."""
from __future__ import annotations

import pytest
import torch.distributed as dist
from mmengine.config import Config

from vvt_mm.runtime import (
    apply_eval_metrics,
    end_launch,
    prepare_launch,
    replace_sync_bn,
    slurm_dist_env,
)


def test_replace_sync_bn_walks_nested_configs():
    cfg = dict(a=dict(type='SyncBN', requires_grad=True),
               b=[dict(norm_cfg=dict(type='SyncBN')), dict(type='BN')], c='SyncBN')
    assert replace_sync_bn(cfg) == 2
    assert cfg['a']['type'] == 'BN' and cfg['b'][0]['norm_cfg']['type'] == 'BN'
    assert cfg['c'] == 'SyncBN'  # only `type` fields change


def test_prepare_launch_without_cuda_converts_sync_bn(monkeypatch):
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    cfg = Config(dict(model=dict(decode_head=dict(norm_cfg=dict(type='SyncBN')))))
    prepare_launch(cfg, 'none')
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert 'model_wrapper_cfg' not in cfg  # single process: no DDP


def test_prepare_launch_leaves_cuda_runs_alone(monkeypatch):
    monkeypatch.setattr('torch.cuda.is_available', lambda: True)
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN'))))
    prepare_launch(cfg, 'pytorch')
    assert cfg.model.norm_cfg.type == 'SyncBN'


def test_end_launch_destroys_the_process_group_and_is_harmless_without_one(tmp_path):
    end_launch()  # no group: nothing to do
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "rendezvous"}', rank=0,
                            world_size=1)
    try:
        end_launch()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


SLURM_TASK = dict(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1',
                  SLURM_NODELIST='gpu[01-02]')


def test_slurm_task_variables_become_the_torch_rendezvous(tmp_path, monkeypatch):
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\n[ "$3" = "gpu[01-02]" ] && printf "gpu01\\ngpu02\\n"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}:/usr/bin:/bin')
    assert slurm_dist_env(dict(SLURM_TASK)) == dict(
        RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='gpu01', MASTER_PORT='29500')
    # MASTER_ADDR / MASTER_PORT of the job win (no scontrol needed).
    monkeypatch.setenv('PATH', str(tmp_path / 'nothing'))
    env = slurm_dist_env(dict(SLURM_TASK, MASTER_ADDR='10.0.0.1', MASTER_PORT='1234'))
    assert (env['MASTER_ADDR'], env['MASTER_PORT']) == ('10.0.0.1', '1234')


def test_slurm_without_its_variables_or_scontrol_says_what_is_missing(monkeypatch):
    with pytest.raises(RuntimeError, match='SLURM_PROCID is not set'):
        slurm_dist_env({})
    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(RuntimeError, match='set MASTER_ADDR'):
        slurm_dist_env(dict(SLURM_TASK))


@pytest.mark.parametrize('scope,metrics,expected', [
    ('mmseg', ['mIoU'], dict(type='IoUMetric', iou_metrics=['mIoU'])),
    ('mmseg', ['mIoU', 'mDice'], dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice'])),
    ('mmpretrain', ['accuracy'], dict(type='Accuracy', topk=(1, 5))),
])
def test_eval_flag_sets_the_test_evaluator(scope, metrics, expected):
    cfg = Config(dict(default_scope=scope, test_evaluator=dict(type='Other')))
    apply_eval_metrics(cfg, metrics)
    assert cfg.test_evaluator == expected


def test_eval_flag_keeps_the_coco_annotation_file():
    cfg = Config(dict(default_scope='mmdet', test_evaluator=dict(
        type='CocoMetric', ann_file='a.json', metric='bbox')))
    apply_eval_metrics(cfg, ['bbox', 'segm'])
    assert cfg.test_evaluator.ann_file == 'a.json'
    assert cfg.test_evaluator.metric == ['bbox', 'segm']


@pytest.mark.parametrize('scope,metrics,message', [
    ('mmseg', ['bbox'], 'not a segmentation metric'),
    ('mmseg', ['mAP50'], 'unknown metric'),
    ('mmdet', ['mIoU'], 'not a detection metric'),
])
def test_eval_flag_rejects_metrics_of_another_task(scope, metrics, message):
    cfg = Config(dict(default_scope=scope, test_evaluator=dict(type='X')))
    with pytest.raises(ValueError, match=message):
        apply_eval_metrics(cfg, metrics)
