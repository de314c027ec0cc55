"""The fused scale- and task-aware pass (C++ loops) equals its torch form: output and every
gradient, both layouts, 1 to 3 branches, ties; and DynamicHead gives the same with and without it."""
import pytest
import torch

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.models.dynamic_head import DynamicHeadBlock
from mmdet_dyhead.ops import cpu_ext
from mmdet_dyhead.ops import scale_task as st
from mmdet_dyhead.utils.build import offsets_off_zero

pytestmark = pytest.mark.skipif(cpu_ext.load() is None, reason='the C++ loops did not build here')


def _case(branches, channels_last, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = 2, 24, 5, 7
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    feats = [torch.randn(N, C, H, W, generator=g, dtype=dtype).contiguous(memory_format=fmt)
             for _ in range(branches)]
    weights = torch.rand(N, branches, generator=g, dtype=dtype)
    coef = [torch.randn(N, C, generator=g, dtype=dtype) for _ in range(4)]
    # ties: in the first 4 channels both affine maps are the same line
    coef[2][:, :4], coef[3][:, :4] = coef[0][:, :4], coef[1][:, :4]
    return [t.requires_grad_() for t in (*feats, weights, *coef)]


@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('branches', [1, 2, 3])
def test_fused_equals_torch_form_with_gradients(branches, channels_last):
    leaves = _case(branches, channels_last)
    feats, (weights, a1, b1, a2, b2) = leaves[:branches], leaves[branches:]
    assert st.fusable(feats)
    got = st.scale_task(feats, weights, a1, b1, a2, b2)
    ref = st.scale_task_reference(feats, weights, a1, b1, a2, b2)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    for name, a, r in zip(['feat'] * branches + ['weights', 'a1', 'b1', 'a2', 'b2'],
                          torch.autograd.grad(got, leaves, g),
                          torch.autograd.grad(ref, leaves, g)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=f'gradient of {name}')


def test_ties_split_the_gradient_evenly():
    """Where both maps are one line the gradient reaching each is half the output's."""
    leaves = _case(1, True)
    feat, weights, a1, b1, a2, b2 = leaves
    out = st.scale_task([feat], weights, a1, b1, a2, b2)
    ga1, ga2 = torch.autograd.grad(out.sum(), [a1, a2])
    torch.testing.assert_close(ga1[:, :4], ga2[:, :4], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ga1[:, 4:], ga2[:, 4:])


def test_without_autograd_equals_with_and_mixed_layouts_agree():
    leaves = _case(3, True, dtype=torch.float32)
    feats, rest = leaves[:3], leaves[3:]
    with_grad = st.scale_task(feats, *rest)
    with torch.no_grad():
        without = st.scale_task(feats, *rest)
        mixed = st.scale_task([feats[0].contiguous(), *feats[1:]], *rest)
    assert torch.equal(with_grad.detach(), without)
    torch.testing.assert_close(mixed, without, rtol=0, atol=0)


def test_a_nan_spreads_as_in_the_torch_form():
    """A NaN input gives a NaN output there, the other branch its whole gradient through both
    affine maps there (as autograd of torch.maximum), and NaN gradients of the weights and
    coefficients it is summed into."""
    leaves = _case(2, True)
    with torch.no_grad():
        leaves[0][0, 3, 2, 2] = float('nan')
    feats, rest = leaves[:2], leaves[2:]
    got = st.scale_task(feats, *rest)
    ref = st.scale_task_reference(feats, *rest)
    assert torch.equal(got.isnan(), ref.isnan()) and got.isnan().sum() == 1
    for a, r in zip(torch.autograd.grad(got.sum(), leaves[1:]),
                    torch.autograd.grad(ref.sum(), leaves[1:])):
        assert torch.equal(a.isnan(), r.isnan())
        torch.testing.assert_close(a.nan_to_num(), r.nan_to_num(), rtol=1e-10, atol=1e-10)


def test_other_dtypes_and_more_branches_take_the_torch_form():
    feats = [torch.randn(1, 4, 3, 3, dtype=torch.bfloat16)]
    assert not st.fusable(feats)
    assert st.fusable([f.float() for f in feats])
    four = [torch.randn(1, 4, 3, 3) for _ in range(4)]
    assert not st.fusable(four)  # the loops take 1 to 3 branches; the torch form takes any
    got = st.scale_task(four, torch.rand(1, 4), *[torch.randn(1, 4) for _ in range(4)])
    assert got.shape == (1, 4, 3, 3)


def test_dynamic_head_equals_its_unfused_form(monkeypatch):
    """With the norms not folded (ops.norm_scale_task off, as for norms other than GroupNorm),
    DynamicHead's scale/task pass runs here: fused and torch form agree."""
    monkeypatch.setattr(DynamicHeadBlock, '_foldable', lambda self, feats: False)
    torch.manual_seed(0)
    model = offsets_off_zero(DynamicHead(32, 32, 2, norm_cfg=dict(type='GN', num_groups=4)))
    feats = [torch.randn(2, 32, s, s + 1) for s in (12, 6, 3)]
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr('mmdet_dyhead.models.dynamic_head.fusable', lambda _: False)
        xs = [f.clone().requires_grad_() for f in feats]
        model.zero_grad()
        out = model(xs)
        sum((o * torch.randn_like(o, generator=torch.Generator().manual_seed(1))).sum()
            for o in out).backward()
        results.append((out, [x.grad for x in xs] + [p.grad.clone() for p in model.parameters()
                                                     if p.grad is not None]))
    (out_f, grads_f), (out_t, grads_t) = results
    assert len(grads_f) == len(grads_t)
    for a, b in zip(out_f, out_t):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_f, grads_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))
