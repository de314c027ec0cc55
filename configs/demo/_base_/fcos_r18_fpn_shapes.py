# FCOS on the demo data: half-width ResNet-18, FPN P3-P7 of 64 channels, GN head.
_base_ = './shapes_detection.py'
FPN_NORM = dict(type='GN', num_groups=16, requires_grad=True)
model = dict(
    type='FCOS',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    neck=dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
              add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True,
              norm_cfg=FPN_NORM),  # as ATSS's: GN keeps P6/P7 in scale from scratch
    bbox_head=dict(
        type='FCOSHead', num_classes={{_base_.num_classes}}, in_channels=64, stacked_convs=4,
        feat_channels=64, strides=[8, 16, 32, 64, 128], norm_on_bbox=True, centerness_on_reg=True,
        center_sampling=True, conv_bias=True,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
