# Baseline: Mask R-CNN with FPN, the standard two shared FC layers and mmdet's mask head.
_base_ = './_base_/mask-rcnn_r18_fpn_shapes.py'
