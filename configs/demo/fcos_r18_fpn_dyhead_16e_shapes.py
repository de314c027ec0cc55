# FCOS + DynamicHead in place of the head's stacked convs, with the ATSS demo's recipe: 4 blocks of
# 64 channels (the FLOPs of the 2 x 4 stacked convs it replaces), the paper's hard sigmoid, FPN with
# GroupNorm as the base (both sides of the pair).
_base_ = './_base_/fcos_r18_fpn_shapes.py'
model = dict(
    neck=[
        dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
             add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True,
             norm_cfg={{_base_.FPN_NORM}}),
        dict(type='DynamicHead', in_channels=64, out_channels=64, num_blocks=4,
             hsigmoid='paper'),
    ],
    bbox_head=dict(stacked_convs=0))
