"""The eval path that folds each level's GroupNorms and resizes into the scale/task pass
(ops/norm_scale_task.py, csrc/norm_scale_task.cpp) equals the norms, resizes and scale_task run
one by one: its moments, its output, and DynamicHead's output without autograd."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.models.dynamic_head import DynamicHeadBlock
from mmdet_dyhead.ops import cpu_ext
from mmdet_dyhead.ops import norm_scale_task as nst
from mmdet_dyhead.ops.scale_task import scale_task_reference
from mmdet_dyhead.utils.build import offsets_off_zero

pytestmark = pytest.mark.skipif(cpu_ext.load() is None, reason='the C++ loops did not build here')


def _half(N, C, H, W, g, dtype=torch.float64, second=True):
    """A channel half of a stacked (N, 2C, H, W) channels-last map: strided, as the kernel's."""
    stacked = torch.randn(N, H, W, 2 * C, generator=g, dtype=dtype).permute(0, 3, 1, 2)
    return stacked[:, C:] if second else stacked[:, :C]


def _resize(x, size):
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=True)


@pytest.mark.parametrize('src,dst', [((5, 7), (5, 7)), ((3, 4), (6, 8)), ((4, 5), (7, 9)),
                                     ((7, 9), (4, 5)), ((1, 1), (3, 2)), ((3, 2), (1, 1))])
def test_moments_are_the_sums_of_the_map_and_of_its_resize(src, dst):
    g = torch.Generator().manual_seed(0)
    x = _half(2, 8, *src, g) * 3 + 1
    assert x.stride(1) == 1 and (src == (1, 1) or not x.is_contiguous())
    got = nst.channel_moments([x], [dst])[0]
    assert got.shape == (2, 3, 8) and got.dtype == torch.float64
    torch.testing.assert_close(got[:, 0], x.sum((2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[:, 1], (x * x).sum((2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[:, 2], _resize(x, dst).sum((2, 3)), rtol=1e-12, atol=1e-12)


def _unfused(levels, sizes, weight_of, coefficients_of):
    """The same math with torch's own GroupNorm, resize and the scale/task torch form."""
    outs = []
    for level, size in zip(levels, sizes):
        feats = [_resize(norm(r), size) for r, norm in level]
        means = [f.mean((2, 3)) for f in feats]
        w = torch.cat([weight_of(m) for m in means], 1) / len(feats)
        mean = sum(w[:, i:i + 1] * m for i, m in enumerate(means))
        outs.append(scale_task_reference(feats, w, *coefficients_of(mean)))
    return outs


@pytest.mark.parametrize('affine', [True, False])
def test_folded_pass_equals_norms_resizes_and_scale_task(affine):
    g = torch.Generator().manual_seed(1)
    N, C = 2, 16
    norms = [nn.GroupNorm(4, C, affine=affine).double() for _ in range(3)]
    if affine:
        for n in norms:
            n.weight.data.uniform_(0.5, 1.5, generator=g)
            n.bias.data.uniform_(-1, 1, generator=g)
    sizes = [(9, 11), (5, 6), (3, 3)]
    levels = [  # same-size halves, a finer branch of another size, coarser ones to upsample
        [(_half(N, C, 9, 11, g, second=False), norms[0]), (_half(N, C, 5, 6, g), norms[2])],
        [(_half(N, C, 5, 6, g, second=False) + 2, norms[0]),
         (torch.randn(N, C, 5, 5, generator=g, dtype=torch.float64)
          .contiguous(memory_format=torch.channels_last), norms[1]),
         (_half(N, C, 3, 3, g), norms[2])],
        [(_half(N, C, 3, 3, g, second=False), norms[0])],
    ]
    lin = nn.Linear(C, 1).double()
    mlp = nn.Linear(C, 4 * C).double()

    def weight_of(mean):
        return F.hardsigmoid(F.relu(lin(mean)))

    def coefficients_of(mean):
        a1, b1, a2, b2 = (F.hardsigmoid(mlp(mean)) - 0.5).split(C, 1)
        return 2 * a1 + 1, b1, 2 * a2, b2

    with torch.no_grad():
        assert nst.eval_fusable(levels)
        got = nst.norm_scale_task(levels, sizes, weight_of, coefficients_of)
        ref = _unfused(levels, sizes, weight_of, coefficients_of)
    for a, r, size in zip(got, ref, sizes):
        assert a.shape == (N, C, *size) and a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_what_the_folded_pass_does_not_take():
    x = _half(1, 8, 3, 3, torch.Generator().manual_seed(0))
    gn = nn.GroupNorm(2, 8).double()
    with torch.no_grad():
        assert nst.eval_fusable([[(x, gn)]])
        assert not nst.eval_fusable([[(x.contiguous(), gn)]])  # channels not contiguous
        assert not nst.eval_fusable([[(x.float(), gn)], [(x, gn)]])  # mixed dtypes
        assert not nst.eval_fusable([[(x, gn), (x, nn.GroupNorm(4, 8).double())]])
        assert not nst.eval_fusable([[(x, nn.BatchNorm2d(8).double())]])
        assert not nst.eval_fusable([[(x, gn)] * 4])  # a level has at most 3 branches
    assert not nst.eval_fusable([[(x, gn)]])  # autograd on: training keeps its norms


@pytest.mark.parametrize('sizes', [[(12, 13), (6, 7), (3, 4)],  # stride-2 sizes
                                   [(13, 17), (6, 9), (3, 4)],  # finer branches resized
                                   [(9, 9)], [(8, 8), (8, 8)]])
def test_dynamic_head_without_autograd_equals_its_training_forward(sizes, monkeypatch):
    """Without autograd DynamicHead folds its norms; with it, it runs them. Same output, fp64
    to rounding; and the folded path really runs (a spy on the C++ pass)."""
    torch.manual_seed(0)
    model = offsets_off_zero(DynamicHead(32, 32, 2, norm_cfg=dict(type='GN', num_groups=4)))
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model = model.double().eval()
    feats = [torch.randn(2, 32, h, w, dtype=torch.float64) for h, w in sizes]
    calls = []
    real = nst.norm_scale_task
    monkeypatch.setattr('mmdet_dyhead.models.dynamic_head.norm_scale_task',
                        lambda *a: calls.append(1) or real(*a))
    trained = model(feats)
    assert not calls
    with torch.no_grad():
        folded = model(feats)
    assert len(calls) == len(model.blocks)
    for a, b in zip(folded, trained):
        torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # and fp32 within its rounding
        model.float()
        got = model([f.float() for f in feats])
    for a, b in zip(got, trained):
        torch.testing.assert_close(a.double(), b.detach(), rtol=1e-4, atol=1e-5)


def test_hooked_attentions_see_their_calls_without_autograd():
    """A forward hook (e.g. the attention recorder) on a module the folded pass skips turns the
    fold off, so the hook is called."""
    torch.manual_seed(0)
    model = DynamicHead(16, 16, 1, norm_cfg=dict(type='GN', num_groups=4)).eval()
    feats = [torch.randn(1, 16, s, s) for s in (8, 4)]
    block: DynamicHeadBlock = model.blocks[0]
    with torch.no_grad():
        assert block._eval_foldable(feats)
        seen = []
        handle = block.spatial.same.norm.register_forward_hook(lambda *a: seen.append(1))
        assert not block._eval_foldable(feats)
        model(feats)
        handle.remove()
    assert len(seen) == 2  # one per level
