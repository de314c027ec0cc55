"""DynamicHead inside a real mmdet detector learns: every neck parameter gets a gradient, and a
few optimizer steps on one batch lower the loss (a sign error or a detached branch would not)."""
import os.path as osp

import torch
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config

from mmdet_dyhead.utils.build import build_detector
from mmdet_dyhead.utils.paths import ROOT


def _loss(model, batch):
    losses = model(**batch, mode='loss')
    return model.parse_losses(losses)[0]


def test_atss_with_dynamic_head_fits_one_batch():
    torch.manual_seed(0)
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py'))
    model = build_detector(cfg)
    dy = model.neck[1]
    with torch.no_grad():  # offsets away from zero, so their convs get non-zero gradients too
        for block in dy.blocks:
            block.spatial.offset_conv.weight.normal_(0, 0.01)
    data = demo_mm_inputs(2, [[3, 96, 128], [3, 80, 100]], num_items=[3, 2], num_classes=6,
                          with_mask=False)
    model.train()
    batch = model.data_preprocessor(data, True)
    first = _loss(model, batch)
    first.backward()
    for name, p in dy.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = [first.item()]
    for _ in range(6):
        opt.step()
        opt.zero_grad()
        loss = _loss(model, batch)
        loss.backward()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
