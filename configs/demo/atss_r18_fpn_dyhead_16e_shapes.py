# ATSS + DynamicHead on the demo data: 3 blocks of 64 channels, then one of the head's stacked
# convs per task (classification, regression) instead of none; together the FLOPs of the 2 x 4
# stacked convs they replace. The blocks share one trunk between the tasks; the per-task conv gives
# each task its own features back (README, "The demo data: does DynamicHead help?").
# The paper's hard sigmoid in the scale-aware attention (weights in [0, 1], so a level's branch
# can be switched off); FPN with GroupNorm as the base.
# The accuracy study in the README compares it with atss_r18_fpn_16e_shapes.py.
_base_ = './_base_/atss_r18_fpn_shapes.py'
model = dict(
    neck=[
        dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
             add_extra_convs='on_output', num_outs=5, norm_cfg={{_base_.FPN_NORM}}),
        dict(type='DynamicHead', in_channels=64, out_channels=64, num_blocks=3,
             hsigmoid='paper'),
    ],
    bbox_head=dict(stacked_convs=1))
