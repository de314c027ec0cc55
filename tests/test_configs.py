"""Every config in configs/ parses and builds; each demo detector does a loss step and a predict."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdet_dyhead.utils.build import build_detector, has_mask_head, num_classes_of, synthetic_batch
from mmdet_dyhead.utils.paths import ROOT

COCO = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))
DEMO = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))


@pytest.mark.parametrize('path', COCO + DEMO, ids=osp.basename)
def test_config_name_says_what_it_holds(path):
    """mmdet's naming, {detector}_{backbone}_{neck}_{schedule}_{data}.py, read back from the
    config: a renamed or copied file that no longer matches its name fails here."""
    name = osp.splitext(osp.basename(path))[0]
    detector, backbone, *rest = name.split('_')
    cfg = Config.fromfile(path)
    model = cfg.model
    assert model.type.lower().replace('rcnn', '-rcnn') == detector, (model.type, detector)
    depth, *style = backbone[1:].split('-')
    assert backbone[0] == 'r' and model.backbone.depth == int(depth)
    assert model.backbone.get('style', 'pytorch') == (style[0] if style else 'pytorch')
    necks = model.neck if isinstance(model.neck, list) else [model.neck]
    assert necks[0].type == 'FPN'
    has_dyhead = any(n.type == 'DynamicHead' for n in necks)
    assert has_dyhead == any(p.startswith('dyhead') for p in rest)
    if 'dyhead-2stage' in rest:
        assert necks[1].task_aware is False
        assert model.roi_head.bbox_head.type == 'TaskAwareBBoxHead'
    head = model.get('bbox_head')
    if 'gn-head' in rest:
        import inspect

        from mmdet.registry import MODELS
        default = inspect.signature(MODELS.get(head.type).__init__).parameters['norm_cfg'].default
        assert head.get('norm_cfg', default)['type'] == 'GN'
    schedule, data = rest[-2], rest[-1]
    if has_dyhead and head is not None:
        # DyHead replaces the head's stacked convs: all of them in the paper's form (the COCO
        # configs), all but at most one per task on the demo data (README, the accuracy study)
        assert head.stacked_convs in ((0,) if data == 'coco' else (0, 1)), head.stacked_convs
    epochs = {'1x': 12, '2x': 24}.get(schedule) or int(schedule.rstrip('e'))
    assert cfg.train_cfg.max_epochs == epochs
    assert {'coco': 'data/coco/', 'shapes': 'data/shapes/'}[data] == cfg.train_dataloader.dataset.data_root


def test_every_family_has_a_coco_config_and_a_demo_pair():
    names = [osp.basename(c) for c in COCO]
    demo = [osp.basename(c) for c in DEMO]
    for fam in ('atss', 'fcos', 'retinanet', 'faster-rcnn', 'mask-rcnn'):
        assert any(n.startswith(fam + '_') and 'dyhead' in n for n in names), fam
        assert any(n.startswith(fam + '_') and 'dyhead' in n for n in demo), fam
        assert any(n.startswith(fam + '_') and 'dyhead' not in n for n in demo), fam
    assert any(n.startswith('faster-rcnn') and 'dyhead-2stage' in n for n in names)
    assert any(n.startswith('mask-rcnn') and 'dyhead-2stage' in n for n in names)


@pytest.mark.parametrize('path', COCO, ids=osp.basename)
def test_coco_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports['imports'] == ['mmdet_dyhead']
    # keeps mmdet's pretrained-backbone init for users with network access
    assert cfg.model.backbone.init_cfg is not None
    model = build_detector(cfg)  # the test drops the pretrained init (no network here)
    dy = model.neck[1]
    assert type(dy).__name__ == 'DynamicHead' and dy.num_blocks == 6 and dy.out_channels == 256
    if 'dyhead-2stage' in path:
        assert isinstance(dy.blocks[0].task, torch.nn.ReLU)
        assert type(model.roi_head.bbox_head).__name__ == 'TaskAwareBBoxHead'
    elif hasattr(model, 'bbox_head'):
        assert model.bbox_head.stacked_convs == 0


@pytest.mark.parametrize('path', DEMO, ids=osp.basename)
def test_demo_detector_loss_step_and_predict(path):
    cfg = Config.fromfile(path)
    model = build_detector(cfg)
    masks = has_mask_head(cfg)
    assert masks == path.startswith(osp.join(ROOT, 'configs', 'demo', 'mask-rcnn'))
    batch = synthetic_batch(2, 96, 128, num_classes_of(cfg), with_mask=masks)
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    total = model.parse_losses(losses)[0]
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(out) == 2 and out[0].pred_instances.bboxes.shape[-1] == 4
    if masks:  # one full-image mask per box
        assert 'loss_mask' in losses and torch.isfinite(losses['loss_mask'])
        pred = out[0].pred_instances
        assert pred.masks.shape == (len(pred.bboxes), *out[0].ori_shape)
    assert ('dyhead' in path) == any(type(m).__name__ == 'DynamicHead' for m in model.modules())


def test_two_stage_bbox_head_rejects_avg_pool():
    from mmdet_dyhead.models import TaskAwareBBoxHead
    with pytest.raises(ValueError, match='with_avg_pool'):
        TaskAwareBBoxHead(with_avg_pool=True, in_channels=8, num_classes=2)
    head = TaskAwareBBoxHead(num_blocks=2, in_channels=8, roi_feat_size=7, num_classes=3)
    cls, reg = head(torch.randn(5, 8, 7, 7))
    assert cls.shape == (5, 4) and reg.shape == (5, 12)
    assert head(torch.randn(0, 8, 7, 7))[0].shape == (0, 4)  # no proposals


def test_flops_count_the_deformable_convs():
    """get_flops' counter includes every deformable conv: compare with a hand count."""
    from mmdet_dyhead.utils.flops import count_flops
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py'))
    model = build_detector(cfg)
    r = count_flops(model, 128, 128)
    assert not any('Deform' in k for k in r['unsupported'])
    dy = model.neck[1]
    sizes = [16, 8, 4, 2, 1]  # P3-P7 of 128x128
    pos = [s * s for s in sizes]
    # per block: same-level conv on every level, finer (stride 2) and coarser branches on L-1 each
    convs = sum(pos) + 2 * sum(pos[1:])
    c = dy.out_channels
    dcn_macs = dy.num_blocks * convs * c * c * 9
    offset_macs = dy.num_blocks * sum(pos) * c * 27 * 9
    got = r['neck_modules']['neck.1']
    assert dcn_macs + offset_macs <= got <= 1.05 * (dcn_macs + offset_macs)
