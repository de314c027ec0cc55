# RetinaNet + DynamicHead: R50, FPN P3-P7, 6 blocks, RetinaNet head without stacked convs, 1x.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_dyhead'], allow_failed_imports=False)

model = dict(
    neck=[
        dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
             add_extra_convs='on_input', num_outs=5),
        dict(type='DynamicHead', in_channels=256, out_channels=256, num_blocks=6),
    ],
    bbox_head=dict(stacked_convs=0))
