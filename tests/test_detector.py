"""DynamicHead inside a real mmdet detector: the demo ATSS config, one loss step and a predict."""
import os.path as osp

import torch
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config

from mmdet_dyhead.analysis import build_detector

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def atss_with_dynamic_head():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py'))
    cfg.model.test_cfg.score_thr = 0.0  # an untrained model still returns boxes
    return build_detector(cfg)


def test_atss_loss_backward_and_predict():
    model = atss_with_dynamic_head()
    assert type(model.neck[1]).__name__ == 'DynamicHead'
    data = demo_mm_inputs(2, [[3, 96, 128], [3, 80, 100]], num_items=[3, 2], num_classes=6,
                          with_mask=False)
    model.train()
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    dy = model.neck[1]
    for name, p in dy.named_parameters():
        if 'offset_conv' in name:
            continue  # zero-initialised offsets get gradients, but these need not be non-zero
        assert p.grad is not None, name
    assert dy.blocks[0].spatial.same.conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(data, False), mode='predict')
    assert len(results) == 2
    boxes = results[0].pred_instances.bboxes
    assert boxes.shape[-1] == 4 and len(boxes) > 0 and torch.isfinite(boxes).all()
