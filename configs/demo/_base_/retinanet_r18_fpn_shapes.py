# RetinaNet on the demo data: half-width ResNet-18, FPN P3-P7 of 64 channels.
_base_ = './shapes_detection.py'
FPN_NORM = dict(type='GN', num_groups=16, requires_grad=True)
model = dict(
    type='RetinaNet',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    neck=dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
              add_extra_convs='on_input', num_outs=5,
              norm_cfg=FPN_NORM),  # as ATSS's: GN keeps P6/P7 in scale from scratch
    bbox_head=dict(
        type='RetinaHead', num_classes={{_base_.num_classes}}, in_channels=64, stacked_convs=4,
        feat_channels=64,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                 min_pos_iou=0, ignore_iof_thr=-1),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                   debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
