# Mask R-CNN in the paper's two-stage form (Fig. 2c): scale- and spatial-aware attention on the
# pyramid before RoI pooling (task_aware=False), task-aware attention on each box RoI after
# RoIAlign in place of the two shared FC layers. The mask head stays mmdet's FCNMaskHead: its
# four 3x3 convs (with ReLU) already adapt per RoI and keep the 14x14 layout the masks need;
# task-aware attention there is untested (docs/two_stage.md).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_dyhead'], allow_failed_imports=False)

model = dict(
    neck=[
        dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        dict(type='DynamicHead', in_channels=256, out_channels=256, num_blocks=6,
             task_aware=False),
    ],
    roi_head=dict(
        bbox_head=dict(
            _delete_=True,
            type='TaskAwareBBoxHead',
            num_blocks=1,
            in_channels=256,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))))
