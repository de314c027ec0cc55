"""DynamicHead inside a real mmdet detector: ATSS with a small backbone, one loss step and a predict."""
import torch
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules

import mmdet_dyhead  # noqa: F401

register_all_modules()


def atss_with_dynamic_head(channels=32):
    return dict(
        type='ATSS',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3), norm_eval=False,
                      init_cfg=None),
        neck=[dict(type='FPN', in_channels=[128, 256, 512], out_channels=channels,
                   add_extra_convs='on_output', num_outs=5),
              dict(type='DynamicHead', in_channels=channels, out_channels=channels,
                   num_blocks=2, norm_cfg=dict(type='GN', num_groups=8, requires_grad=True))],
        bbox_head=dict(
            type='ATSSHead', num_classes=3, in_channels=channels, stacked_convs=0,
            feat_channels=channels,
            anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                  scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                       pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.6), max_per_img=20))


def test_atss_loss_backward_and_predict():
    model = MODELS.build(ConfigDict(atss_with_dynamic_head()))
    assert type(model.neck[1]).__name__ == 'DynamicHead'
    data = demo_mm_inputs(2, [[3, 96, 128], [3, 80, 100]], num_items=[3, 2], num_classes=3,
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
