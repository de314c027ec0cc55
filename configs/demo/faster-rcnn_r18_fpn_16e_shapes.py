# Baseline: Faster R-CNN with FPN and the standard two shared FC layers.
_base_ = './_base_/faster-rcnn_r18_fpn_shapes.py'
