# FCOS + DynamicHead with the ATSS demo's recipe: 3 blocks of 64 channels, then one of the head's
# stacked convs per task (classification; regression and centerness), together the FLOPs of the
# 2 x 4 stacked convs they replace; the paper's hard sigmoid; FPN with GroupNorm as the base (both
# sides of the pair). In the paper's form (4 blocks, no stacked convs) FCOS with DynamicHead fell
# far behind its baseline on the demo data (README, "Other detectors").
_base_ = './_base_/fcos_r18_fpn_shapes.py'
model = dict(
    neck=[
        dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
             add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True,
             norm_cfg={{_base_.FPN_NORM}}),
        dict(type='DynamicHead', in_channels=64, out_channels=64, num_blocks=3,
             hsigmoid='paper'),
    ],
    bbox_head=dict(stacked_convs=1))
