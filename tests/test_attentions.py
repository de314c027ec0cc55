"""Each attention on its own: shapes, ranges of the attention weights, gradients, fallbacks."""
import pytest
import torch
from conftest import perturb

from mmdet_dyhead.models import (
    DeformConvNorm,
    LevelMean,
    ScaleAwareAttention,
    SpatialAwareAttention,
    TaskAwareAttention,
)


def _perturb(module, std=0.5):
    perturb(module, std, replace=True)


@pytest.mark.parametrize('kind,lo,hi', [('reference', 0.5, 1.0), ('paper', 0.0, 1.0)])
def test_scale_attention_range_and_mean(kind, lo, hi):
    att = ScaleAwareAttention(8, hsigmoid=kind)
    _perturb(att, 3.0)
    feats = [torch.randn(4, 8, 5, 6) * 3 for _ in range(3)]
    w = torch.stack([att.attention(f) for f in feats])
    assert w.shape == (3, 4, 1, 1, 1)
    assert w.min() >= lo and w.max() <= hi
    assert (w > lo).any() and (w < hi).any()  # not saturated everywhere
    out = att(feats)
    torch.testing.assert_close(out, sum(f * a for f, a in zip(feats, w)) / 3)


def test_scale_attention_paper_has_no_relu():
    att = ScaleAwareAttention(4, hsigmoid='paper')
    with torch.no_grad():
        att.fc.weight.zero_()
        att.fc.bias.fill_(-0.6)
    # paper: (x + 1) / 2 = 0.2; reference would clamp the negative logit to 0 first -> 0.5
    assert torch.allclose(att.attention(torch.randn(1, 4, 3, 3)), torch.tensor(0.2))
    att.hsigmoid = 'reference'
    assert torch.allclose(att.attention(torch.randn(1, 4, 3, 3)), torch.tensor(0.5))


def test_level_mean():
    feats = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    torch.testing.assert_close(LevelMean()(feats), (feats[0] + feats[1] + feats[2]) / 3)


def test_task_attention_coefficients_and_init():
    att = TaskAwareAttention(16)
    x = torch.randn(3, 16, 7, 5)
    # zero weights: theta = hsigmoid(0) - 0.5 = 0 -> a = (1, 0), b = (0, 0): exactly a ReLU
    for p in att.parameters():
        torch.nn.init.zeros_(p)
    torch.testing.assert_close(att(x), torch.relu(x))
    _perturb(att, 2.0)
    a1, b1, a2, b2 = att.coefficients(x)
    assert a1.shape == (3, 16, 1, 1)
    assert a1.min() >= 0 and a1.max() <= 2 and a2.min() >= -1 and a2.max() <= 1
    assert b1.abs().max() <= 0.5 and b2.abs().max() <= 0.5
    torch.testing.assert_close(att(x), torch.maximum(x * a1 + b1, x * a2 + b2))


def test_dynamic_relu_gradients_equal_autograd_including_ties():
    """The hand-written backward of pi_C equals autograd of max(a1 x + b1, a2 x + b2); at ties
    (here x = 0 with b1 = b2) both split the gradient evenly."""
    from mmdet_dyhead.models.attentions import _DynamicReLU
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    x[:, :, :2] = 0
    coef = [torch.randn(2, 6, 1, 1, dtype=torch.float64) for _ in range(4)]
    coef[3] = coef[1].clone()  # b2 = b1: y1 == y2 wherever x == 0
    leaves = [t.requires_grad_() for t in (x, *coef)]
    ours = _DynamicReLU.apply(*leaves)
    a1, b1, a2, b2 = coef
    ref = torch.maximum(x * a1 + b1, x * a2 + b2)
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=1e-14)  # addcmul rounds once
    g = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(ours, leaves, g), torch.autograd.grad(ref, leaves, g)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_attention_gradients_reach_every_parameter():
    feats = [torch.randn(2, 16, s, s, requires_grad=True) for s in (9, 5, 3)]
    spatial = SpatialAwareAttention(16, 16, norm_cfg=dict(type='GN', num_groups=4),
                                    zero_init_offset=False)
    scale, task = ScaleAwareAttention(16), TaskAwareAttention(16)
    for m in (spatial, scale, task):
        _perturb(m, 0.2)
    out = [task(scale(b)) for b in spatial(feats)]
    sum(o.square().sum() for o in out).backward()
    for m in (spatial, scale, task):
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad.abs().sum() > 0 for f in feats)


def test_spatial_branches_per_level():
    spatial = SpatialAwareAttention(4, 8, norm_cfg=None)
    feats = [torch.randn(1, 4, 11, 13), torch.randn(1, 4, 6, 7), torch.randn(1, 4, 3, 4)]
    branches = spatial(feats)
    assert [len(b) for b in branches] == [2, 3, 2]  # no finer for level 0, no coarser for the last
    for level, bs in enumerate(branches):
        assert all(b.shape == (1, 8) + feats[level].shape[-2:] for b in bs)


def test_spatial_off_is_a_plain_conv_with_the_same_weights():
    conv = DeformConvNorm(4, 6, stride=2, norm_cfg=None)
    x = torch.randn(2, 4, 9, 8)
    ref = torch.nn.functional.conv2d(x, conv.conv.weight, None, 2, 1)
    torch.testing.assert_close(conv(x), ref)
    off = torch.zeros(2, 18, *ref.shape[-2:])
    mask = torch.ones(2, 9, *ref.shape[-2:])
    for impl in ('torch', 'mmcv'):
        torch.testing.assert_close(conv(x, off, mask, impl), ref, rtol=1e-5, atol=1e-5)
    plain = SpatialAwareAttention(4, 6, deformable=False)
    assert plain.offset_conv is None
