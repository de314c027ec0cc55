# The embedded demo data (python -m mmdet_dyhead.demo_data), schedule and runtime shared by the
# demo configs. Small enough to train on a 2-core CPU in minutes.
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmdet_dyhead'], allow_failed_imports=False)

dataset_type = 'CocoDataset'
data_root = 'data/shapes/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'star', 'cross', 'ring'))
num_classes = 6

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/val.json', data_prefix=dict(img='val/'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/val.json',
                     metric='bbox', format_only=False)
test_evaluator = val_evaluator

max_epochs = 16
# val every 2 epochs: the learning curve (work_dir/learning_curve.png) has 8 points
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# From scratch on a CPU: AdamW converges in far fewer steps than the SGD of the COCO configs.
# AdamW moves every weight at about the lr whatever its gradient's scale, which lets the
# zero-initialised offset convs of DynamicHead grow fast enough to push samples off the map;
# a 0.1 lr multiplier keeps the deformation gradual (no effect on configs without DynamicHead).
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05),
                     paramwise_cfg=dict(custom_keys={'offset_conv': dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.02, convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(type='LoggerHook', interval=10),
                     checkpoint=dict(type='CheckpointHook', interval=max_epochs,
                                     max_keep_ckpts=1))
log_processor = dict(window_size=10)
# checkpoints carry the RNG states: --resume continues exactly as an uninterrupted run;
# the loss and val mAP are drawn in work_dir/learning_curve.png
custom_hooks = [dict(type='RNGStateHook'), dict(type='LearningCurveHook')]
randomness = dict(seed=0)

# a small ResNet-18 (half width) from scratch: no pretrained weights here (no network)
backbone = dict(type='ResNet', depth=18, base_channels=32, num_stages=4, out_indices=(1, 2, 3),
                frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                style='pytorch', init_cfg=None)
data_preprocessor = dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)
