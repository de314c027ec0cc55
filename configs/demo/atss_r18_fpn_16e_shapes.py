# Baseline: ATSS with the head's 4 stacked convs (what DynamicHead replaces).
_base_ = './_base_/atss_r18_fpn_shapes.py'
