"""tools/visualize_attention.py: what it draws is what the neck computed (its own intermediate
tensors), and the sampling points it draws are where the deformable convs sample."""
import os.path as osp

import pytest
import torch
from conftest import DEVICE, perturb

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.models.deform_conv_norm import legacy_view, resize_to, stride2_size
from mmdet_dyhead.ops import modulated_deform_conv2d
from mmdet_dyhead.visualization import (
    AttentionRecorder,
    find_neck,
    sample_points,
    scale_table,
    strongest_positions,
)

SIZES = [(12, 10), (6, 5), (3, 3)]


def _neck(legacy=False, **kw):
    neck = DynamicHead(32, 32, num_blocks=2, hsigmoid='paper', legacy_offsets=legacy, **kw)
    perturb(neck, 0.1)  # offsets of about a pixel and more, masks away from 0.5
    return neck.eval()


def _feats(sizes=SIZES, n=2):
    return [torch.randn(n, 32, h, w) for h, w in sizes]


def _branches_in_order(branches, level):
    names = ['same'] + (['finer'] if level > 0 else [])
    return dict(zip(names + ['coarser'] * 3, branches))


@torch.no_grad()
def test_records_equal_the_neck_tensors_and_change_nothing():
    neck, feats = _neck(), _feats()
    plain = neck(feats)
    with AttentionRecorder(neck) as rec:
        out = neck(feats)
    # recorded, the attentions run one module at a time, not in the fused pass: the same math,
    # rounded apart in the last bits at most
    for a, b in zip(out, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(rec.blocks) == 2
    x = feats
    for block, r in zip(neck.blocks, rec.blocks):
        assert r.sizes == [tuple(f.shape[-2:]) for f in x]
        branches = block.spatial(x)
        for level, f in enumerate(x):
            # the neck runs on channels-last maps (its CPU layout), this on contiguous ones: sums
            # round apart in the last bits
            offsets, masks = block.spatial.offsets(f)
            torch.testing.assert_close(r.offsets[level], offsets, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(r.masks[level], masks, rtol=1e-5, atol=1e-5)
            named = _branches_in_order(branches[level], level)
            assert set(r.scale[level]) == set(named)
            for name, b in named.items():
                torch.testing.assert_close(r.scale[level][name],
                                           block.scale.attention(b).flatten(), rtol=1e-5,
                                           atol=1e-5)
            fused = block.scale(branches[level])
            a1, b1, a2, b2 = block.task.coefficients(fused)
            for got, want in zip(r.coefficients[level], (a1, b1, a2, b2)):
                torch.testing.assert_close(got, want.flatten(1), rtol=1e-5, atol=1e-5)
            share = (a1 * fused + b1 >= a2 * fused + b2).float().mean((2, 3))
            assert torch.allclose(r.piece1_share[level], share)
        x = block(x)
        for got, want in zip(r.outputs, x):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the drawn heat map is the recorded weights, NaN where a branch does not exist
    table = scale_table(rec.blocks[0], n=1)
    assert torch.isnan(torch.tensor(table[0, 0])) and torch.isnan(torch.tensor(table[-1, 2]))
    assert table[1, 1] == pytest.approx(float(rec.blocks[0].scale[1]['same'][1]))


def _ramp_sampled(x_size, offsets, masks, stride):
    """A deformable conv whose input holds its own (y, x) coordinates and whose weight picks one
    tap per output channel: output (2k, 2k+1) = mask_k * (y, x) where tap k sampled."""
    h, w = x_size
    n = offsets.shape[0]
    ramp = torch.stack(torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                      torch.arange(w, dtype=torch.float32), indexing='ij'))
    weight = torch.zeros(18, 2, 3, 3)
    for k in range(9):
        weight[2 * k, 0, k // 3, k % 3] = weight[2 * k + 1, 1, k // 3, k % 3] = 1
    out = modulated_deform_conv2d(ramp.expand(n, 2, h, w).contiguous(), offsets.contiguous(),
                                  masks.contiguous(), weight, None, stride, 1, 1)
    return out.view(n, 9, 2, *out.shape[-2:])


@pytest.mark.parametrize('legacy', [False, True])
@torch.no_grad()
def test_sample_points_are_where_the_kernel_samples(legacy):
    sizes = SIZES if not legacy else [(12, 10), (6, 5), (3, 3)]
    neck, feats = _neck(legacy), _feats(sizes)
    with AttentionRecorder(neck) as rec:
        neck(feats)
    n, checked, total = 1, 0, 0
    for b, r in enumerate(rec.blocks):
        # what each branch's conv is given, as SpatialAwareAttention computes it
        sampled = {}
        for level, (h, w) in enumerate(r.sizes):
            sampled[('same', level)] = _ramp_sampled((h, w), r.offsets[level], r.masks[level], 1)
            if level > 0:
                size = stride2_size(*r.sizes[level - 1])
                sampled[('finer', level)] = _ramp_sampled(
                    r.sizes[level - 1], resize_to(r.offsets[level], size),
                    resize_to(r.masks[level], size), 2)
            if level < len(r.sizes) - 1:
                size = r.sizes[level + 1]
                offs, masks = ((legacy_view(r.offsets[level], size),
                                legacy_view(r.masks[level], size)) if legacy
                               else (r.offsets[level + 1], r.masks[level + 1]))
                sampled[('coarser', level)] = _ramp_sampled(size, offs, masks, 1)
        for level, (h, w) in enumerate(r.sizes):
            for y in range(h):
                for x in range(w):
                    for s in sample_points(neck, rec.blocks, b, level, y, x, n):
                        src_h, src_w = r.sizes[s.level]
                        got = sampled[(s.branch, level)][n].cpu()  # sample_points answers on the CPU
                        # the output position in that conv's map (same: (y, x); others: the
                        # one the resize to level l weighs most, as sample_points says)
                        oy, ox = _pos(s.branch, y, x, r.sizes, level, got.shape[-2:])
                        for k in range(9):
                            total += 1
                            ty, tx = s.yx[k].tolist()
                            if not (0 <= ty <= src_h - 1 and 0 <= tx <= src_w - 1):
                                continue  # zero padding: the ramp says nothing there
                            want = s.mask[k] * s.yx[k]
                            assert torch.allclose(got[k, :, oy, ox], want, atol=1e-4), \
                                (b, level, y, x, s.branch, k)
                            checked += 1
    assert checked > total // 2


def _near(p, size, src):
    # align_corners=True: output pixel p reads source p * (src - 1) / (size - 1)
    return p if size == src or size == 1 else round(p * (src - 1) / (size - 1))


def _pos(branch, y, x, sizes, level, src):
    if branch == 'same':
        return y, x
    h, w = sizes[level]
    return _near(y, h, src[0]), _near(x, w, src[1])


def test_strongest_positions_are_strong_and_apart():
    neck, feats = _neck(), _feats()
    with AttentionRecorder(neck) as rec:
        neck(feats)
    last = rec.blocks[-1]
    picked = strongest_positions(last, 3, levels=[0], n=0, min_distance=2)
    assert len(picked) == 3
    norm = last.outputs[0][0].norm(dim=0)
    assert float(norm[picked[0][1], picked[0][2]]) == pytest.approx(float(norm.max()))
    for i, (_, y, x) in enumerate(picked):
        for _, y2, x2 in picked[:i]:
            assert max(abs(y - y2), abs(x - x2)) >= 2


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match='has no DynamicHead'):
        find_neck(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)))
    neck = DynamicHead(32, 32, num_blocks=1, spatial_aware=False).eval()
    with AttentionRecorder(neck) as rec, torch.no_grad():
        neck(_feats())
    with pytest.raises(ValueError, match='spatial_aware=False'):
        sample_points(neck, rec.blocks, 0, 0, 1, 1)


@pytest.mark.skipif(DEVICE.type != 'cpu', reason='the tool runs on the CPU here')
def test_tool_draws_what_the_detector_neck_computed(tmp_path):
    """The tool on a small ATSS + DynamicHead: its PNGs appear, and the records it drew from
    equal a manual run of the neck's blocks on the FPN output of the same forward pass."""
    import numpy as np
    from mmengine.config import Config
    from PIL import Image

    from mmdet_dyhead.utils.build import build_detector
    from mmdet_dyhead.visualization.image import visualize
    cfg = Config.fromfile('configs/demo/atss_r18_fpn_dyhead_16e_shapes.py')
    cfg.model.neck[1].num_blocks = 2
    model = build_detector(cfg)
    perturb(model.neck[1], 0.05)
    image = tmp_path / 'img.png'
    Image.fromarray((np.random.RandomState(0).rand(150, 200, 3) * 255).astype('uint8')).save(image)
    fpn_out = []
    handle = model.neck[0].register_forward_hook(lambda m, i, o: fpn_out.append(o))
    try:
        out = visualize(model, cfg, str(image), str(tmp_path / 'vis'), points=3)
    finally:
        handle.remove()
    for name in ('scale', 'spatial', 'task'):
        assert osp.getsize(out['paths'][name]) > 5000
    assert out['level_names'] == ['P3', 'P4', 'P5', 'P6', 'P7']
    assert len(out['positions']) == 3
    with torch.no_grad():
        x = list(fpn_out[0])
        for block, r in zip(model.neck[1].blocks, out['blocks']):
            branches = block.spatial(x)
            for level in range(len(x)):
                named = _branches_in_order(branches[level], level)
                for name, b in named.items():
                    assert torch.allclose(r.scale[level][name], block.scale.attention(b).flatten(),
                                      atol=1e-6)
            x = block(x)
        assert torch.allclose(out['blocks'][-1].outputs[0], x[0], atol=1e-5)
