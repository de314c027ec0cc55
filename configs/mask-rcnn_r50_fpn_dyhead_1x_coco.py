# Mask R-CNN with DynamicHead on the pyramid (P2-P6): all three attentions before the RPN and the
# RoI heads; the box head and the mask head (FCNMaskHead) stay mmdet's standard ones.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_dyhead'], allow_failed_imports=False)

model = dict(
    neck=[
        dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        dict(type='DynamicHead', in_channels=256, out_channels=256, num_blocks=6),
    ])
