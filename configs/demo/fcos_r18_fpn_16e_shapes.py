# Baseline: fcos with the head's 4 stacked convs (what DynamicHead replaces).
_base_ = './_base_/fcos_r18_fpn_shapes.py'
