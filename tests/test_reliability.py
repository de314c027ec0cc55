"""Hostile input: property-based shapes, NaN/inf, degenerate batches, mixed precision, config mistakes."""
import importlib.util
import os.path as osp

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmengine.config import Config

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.config_check import check_model_cfg
from mmdet_dyhead.ops import modulated_deform_conv2d
from mmdet_dyhead.utils.build import build_detector, synthetic_batch
from mmdet_dyhead.utils.paths import ROOT

GN4 = dict(type='GN', num_groups=4, requires_grad=True)


@st.composite
def pyramids(draw):
    levels = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    sizes = [(h, w)]
    for _ in range(levels - 1):  # non-increasing, sometimes not halves
        ph, pw = sizes[-1]
        sizes.append((draw(st.integers(1, ph)), draw(st.integers(1, pw))))
    return sizes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=pyramids(), n=st.integers(1, 2), channels=st.sampled_from([8, 12, 16]),
       scale=st.booleans(), spatial=st.booleans(), task=st.booleans(),
       impl=st.sampled_from(['torch', 'mmcv']), seed=st.integers(0, 2**16))
def test_property_shapes_kept_outputs_and_gradients_finite(sizes, n, channels, scale, spatial,
                                                           task, impl, seed):
    # GN4: 2+ channels per group (PyTorch's GroupNorm refuses one value per group in training)
    torch.manual_seed(seed)
    neck = DynamicHead(channels, channels, num_blocks=2, norm_cfg=GN4, scale_aware=scale,
                       spatial_aware=spatial, task_aware=task, zero_init_offset=False,
                       dcn_impl=impl)
    feats = [torch.randn(n, channels, h, w, requires_grad=True) for h, w in sizes]
    out = neck(feats)
    assert [o.shape for o in out] == [f.shape for f in feats]
    assert all(torch.isfinite(o).all() for o in out)
    sum(o.sum() for o in out).backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    assert all(torch.isfinite(p.grad).all() for p in neck.parameters() if p.grad is not None)


def test_nan_and_inf_stay_in_their_sample():
    """Documented: a non-finite value makes its own sample's outputs non-finite (GroupNorm and the
    global averages spread it) and leaves the other samples of the batch exactly as alone."""
    neck = DynamicHead(8, 8, num_blocks=2, norm_cfg=GN4, zero_init_offset=False).eval()
    feats = [torch.randn(2, 8, s, s) for s in (8, 4, 2)]
    clean = [f[1:].clone() for f in feats]
    for bad in (float('nan'), float('inf')):
        feats[0][0, 3, 2, 2] = bad
        with torch.no_grad():
            out = neck(feats)
            alone = neck(clean)
        assert not torch.isfinite(out[0][0]).all()
        for o, a in zip(out, alone):
            torch.testing.assert_close(o[1:], a, rtol=1e-5, atol=1e-6)


def test_nan_offsets_sample_nothing():
    """A NaN offset gives a zero sample (mmcv reads nothing for an invalid position), not a crash."""
    x = torch.randn(1, 2, 5, 5)
    off = torch.zeros(1, 18, 5, 5)
    off[0, :, 2, 2] = float('nan')
    out = modulated_deform_conv2d(x, off, torch.ones(1, 9, 5, 5), torch.ones(1, 2, 3, 3), None, 1, 1)
    assert out[0, 0, 2, 2] == 0 and torch.isfinite(out).all()


@pytest.fixture(scope='module')
def demo_atss():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py'))
    return build_detector(cfg)


def test_no_annotations_tiny_images_and_1x1_levels(demo_atss):
    """An image without boxes, and images smaller than the largest stride (P7 is 1x1)."""
    model = demo_atss.train()
    batch = synthetic_batch(2, 20, 24, 6)
    gt = batch['data_samples'][0].gt_instances
    batch['data_samples'][0].gt_instances = gt[:0]  # no annotations
    data = model.data_preprocessor(batch, True)
    assert data['inputs'].shape[-2:] == (32, 32)
    feats = model.extract_feat(data['inputs'])
    assert feats[-1].shape[-2:] == (1, 1)
    losses = model(**data, mode='loss')
    total = model.parse_losses(losses)[0]
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(res) == 2


@pytest.mark.cpu_only
def test_bf16_autocast_on_cpu_close_to_fp32():
    """bf16 autocast: forward and backward finite, outputs within 5% (relative to their scale),
    all parameter gradients together within 10% (relative L2; the attention FCs' own, summed over
    every position of bf16 maps, differ by up to ~20% one by one, as under stock autocast)."""
    torch.manual_seed(0)
    neck = DynamicHead(16, 16, num_blocks=2, norm_cfg=GN4, zero_init_offset=False)
    feats = [torch.randn(2, 16, s, s, requires_grad=True) for s in (12, 6, 3)]
    ref = neck(feats)
    sum(o.square().mean() for o in ref).backward()
    ref_grads = torch.cat([p.grad.flatten() for p in neck.parameters()])
    neck.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = neck(feats)
        loss = sum(o.float().square().mean() for o in out)
    loss.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    for o, r in zip(out, ref):
        assert o.dtype == torch.bfloat16 and torch.isfinite(o).all()
        err = (o.float() - r).abs().max() / r.abs().max()
        assert err < 0.05, err
    grads = torch.cat([p.grad.flatten() for p in neck.parameters()])
    assert ((grads - ref_grads).norm() / ref_grads.norm()) < 0.1


def test_deform_conv_dtypes():
    """bf16 inputs with fp32 weights compute in fp32; all-bf16 stays bf16 and close to fp32."""
    x, w = torch.randn(1, 4, 6, 6), torch.randn(3, 4, 3, 3)
    off, m = torch.randn(1, 18, 6, 6), torch.rand(1, 9, 6, 6)
    ref = modulated_deform_conv2d(x, off, m, w, None, 1, 1)
    mixed = modulated_deform_conv2d(x.bfloat16(), off.bfloat16(), m.bfloat16(), w, None, 1, 1)
    assert mixed.dtype == torch.float32
    low = modulated_deform_conv2d(x.bfloat16(), off.bfloat16(), m.bfloat16(), w.bfloat16(), None, 1, 1)
    assert low.dtype == torch.bfloat16
    assert ((low.float() - ref).abs().max() / ref.abs().max()) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_fp16_autocast_on_gpu():
    neck = DynamicHead(16, 16, num_blocks=2, norm_cfg=GN4, zero_init_offset=False).cuda()
    feats = [torch.randn(2, 16, s, s, device='cuda', requires_grad=True) for s in (12, 6, 3)]
    ref = neck(feats)
    with torch.autocast('cuda', dtype=torch.float16):
        out = neck(feats)
    sum(o.float().sum() for o in out).backward()
    for o, r in zip(out, ref):
        assert torch.isfinite(o).all()
        assert ((o.float() - r).abs().max() / r.abs().max()) < 0.02


def test_config_channel_mismatch_is_caught_at_build_time():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/atss_r50_fpn_dyhead_1x_coco.py'))
    cfg.model.neck[0].out_channels = 128
    with pytest.raises(ValueError, match=r'DynamicHead has in_channels=256, but neck\[0\] FPN outputs 128'):
        check_model_cfg(cfg.model)
    cfg = Config.fromfile(osp.join(ROOT, 'configs/atss_r50_fpn_dyhead_1x_coco.py'))
    cfg.model.bbox_head.in_channels = 64
    with pytest.raises(ValueError, match=r'bbox_head.in_channels=64, but the DynamicHead'):
        build_detector(cfg)


def test_checkpoint_that_does_not_match_the_config_names_the_keys(tmp_path, demo_atss):
    spec = importlib.util.spec_from_file_location('test_tool', osp.join(ROOT, 'tools/test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    state = dict(demo_atss.state_dict())
    state.pop('neck.1.blocks.0.task.fc1.weight')
    state['neck.1.blocks.9.extra'] = torch.zeros(1)
    state['bbox_head.atss_cls.weight'] = torch.zeros(1, 2, 3, 3)
    path = tmp_path / 'wrong.pth'
    torch.save(dict(state_dict=state), path)
    with pytest.raises(SystemExit) as e:
        tool.check_checkpoint_matches(demo_atss, str(path))
    msg = str(e.value)
    assert 'neck.1.blocks.0.task.fc1.weight' in msg and 'neck.1.blocks.9.extra' in msg
    assert 'bbox_head.atss_cls.weight: checkpoint (1, 2, 3, 3)' in msg
