# ATSS + DynamicHead (2 blocks of 64 channels) in place of the head's stacked convs.
_base_ = './_base_/atss_r18_fpn_shapes.py'
model = dict(
    neck=[
        dict(type='FPN', in_channels=[64, 128, 256], out_channels=64,
             add_extra_convs='on_output', num_outs=5),
        dict(type='DynamicHead', in_channels=64, out_channels=64, num_blocks=2),
    ],
    bbox_head=dict(stacked_convs=0))
