"""LearningCurveHook: the numbers it draws are the losses and val metrics it was given."""
import json
from types import SimpleNamespace

import pytest
import torch

from mmdet_dyhead.hooks import LearningCurveHook
from mmdet_dyhead.utils.config import add_learning_curve


def _train(hook, runner, losses, epoch=0):
    for loss in losses:
        hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(loss), loss_cls=loss / 2,
                                                      acc=torch.tensor(99.0)))
        runner.iter += 1
    runner.epoch = epoch + 1


def test_points_are_interval_means_and_val_metrics(tmp_path):
    runner = SimpleNamespace(iter=0, epoch=0, work_dir=str(tmp_path))
    hook = LearningCurveHook(interval=2)
    hook.before_train(runner)
    _train(hook, runner, [4.0, 2.0, 1.0, 3.0, 7.0])  # the 5th is not a full interval yet
    hook.after_val_epoch(runner, {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5,
                                  'coco/bbox_mAP_copypaste': '0.25 0.5'})
    saved = json.load(open(tmp_path / 'learning_curve.json'))
    assert saved['train'] == [dict(iter=2, epoch=0, loss=3.0, loss_cls=1.5),
                              dict(iter=4, epoch=0, loss=2.0, loss_cls=1.0)]
    assert saved['val'] == [dict(iter=5, epoch=1, bbox_mAP=0.25, bbox_mAP_50=0.5)]
    png = (tmp_path / 'learning_curve.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'


def test_resume_keeps_the_curve_up_to_the_checkpoint(tmp_path):
    runner = SimpleNamespace(iter=0, epoch=0, work_dir=str(tmp_path))
    hook = LearningCurveHook(interval=1)
    hook.before_train(runner)
    _train(hook, runner, [1.0, 2.0])
    hook.after_val_epoch(runner, {'coco/bbox_mAP': 0.1})
    _train(hook, runner, [3.0, 4.0], epoch=1)
    hook.after_val_epoch(runner, {'coco/bbox_mAP': 0.2})
    resumed = SimpleNamespace(iter=2, epoch=1, work_dir=str(tmp_path))  # from epoch_1.pth
    hook2 = LearningCurveHook(interval=1)
    hook2.before_train(resumed)
    assert [p['loss'] for p in hook2.train] == [1.0, 2.0]
    assert [p['bbox_mAP'] for p in hook2.val] == [0.1]
    fresh = LearningCurveHook(interval=1)  # a new run in the same work dir starts over
    fresh.before_train(SimpleNamespace(iter=0, epoch=0, work_dir=str(tmp_path)))
    assert fresh.train == [] and fresh.val == []


def test_bad_interval_is_named():
    with pytest.raises(ValueError, match='LearningCurveHook: interval'):
        LearningCurveHook(interval=0)


def test_train_py_adds_the_hook_once():
    from mmengine.config import Config
    cfg = Config(dict(custom_hooks=[dict(type='RNGStateHook')]))
    add_learning_curve(cfg)
    add_learning_curve(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['RNGStateHook', 'LearningCurveHook']
