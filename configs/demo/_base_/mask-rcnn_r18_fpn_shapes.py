# Mask R-CNN on the demo data: the Faster R-CNN demo model (half-width ResNet-18, FPN P2-P6 of
# 64 channels) plus mmdet's mask branch (RoIAlign 14x14, 4 convs, 28x28 masks), trained on the
# demo's instance masks; evaluated on boxes and masks.
_base_ = './faster-rcnn_r18_fpn_shapes.py'
model = dict(
    type='MaskRCNN',
    roi_head=dict(
        mask_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                                out_channels=64, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=64, conv_out_channels=64,
                       num_classes={{_base_.num_classes}},
                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
