# ATSS on the demo data: half-width ResNet-18, FPN P3-P7 of 64 channels.
_base_ = './shapes_detection.py'
FPN_NORM = dict(type='GN', num_groups=16, requires_grad=True)
model = dict(
    type='ATSS',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    # GroupNorm in the FPN: trained from scratch, its P6/P7 otherwise grow to a std of 35-160,
    # which DynamicHead's first offset conv reads as it is (README, "Training from scratch")
    neck=dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
              add_extra_convs='on_output', num_outs=5, norm_cfg=FPN_NORM),
    bbox_head=dict(
        type='ATSSHead', num_classes={{_base_.num_classes}}, in_channels=64, stacked_convs=4,
        feat_channels=64, norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
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
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
