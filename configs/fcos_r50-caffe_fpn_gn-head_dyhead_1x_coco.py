# FCOS + DynamicHead: mmdet's FCOS 1x (caffe-style R50, GN head) with DyHead in place of the
# head's 4 stacked convs.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['mmdet_dyhead'], allow_failed_imports=False)

model = dict(
    neck=[
        dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
             add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True),
        dict(type='DynamicHead', in_channels=256, out_channels=256, num_blocks=6),
    ],
    bbox_head=dict(stacked_convs=0))
