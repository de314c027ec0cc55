# Faster R-CNN in the paper's two-stage form (Fig. 2c): scale- and spatial-aware attention on the
# pyramid, task-aware attention on each RoI in place of the shared FC layers.
_base_ = './_base_/faster-rcnn_r18_fpn_shapes.py'
model = dict(
    neck=[
        dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=64, num_outs=5),
        dict(type='DynamicHead', in_channels=64, out_channels=64, num_blocks=2, task_aware=False),
    ],
    roi_head=dict(
        bbox_head=dict(_delete_=True, type='TaskAwareBBoxHead', num_blocks=1, in_channels=64,
                       roi_feat_size=7, num_classes={{_base_.num_classes}},
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                       target_stds=[0.1, 0.1, 0.2, 0.2]),
                       reg_class_agnostic=False,
                       loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0))))
