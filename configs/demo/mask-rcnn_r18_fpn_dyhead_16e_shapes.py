# Mask R-CNN with DynamicHead (2 blocks, all three attentions) on the P2-P6 pyramid, which both
# RoI heads (box and mask) read; the heads stay mmdet's.
_base_ = './_base_/mask-rcnn_r18_fpn_shapes.py'
model = dict(
    neck=[
        dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=64, num_outs=5),
        dict(type='DynamicHead', in_channels=64, out_channels=64, num_blocks=2),
    ])
