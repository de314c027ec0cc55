"""The folded passes (ops/norm_scale_task.py, csrc/norm_scale_task.cpp: each level's GroupNorms
and resizes folded into the scale/task pass) equal the norms, resizes and scale_task run one by
one: their moments, outputs and every gradient, and DynamicHead's, with and without autograd."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.models.dynamic_head import DynamicHeadBlock
from mmdet_dyhead.ops import cpu_ext, group_view
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


def _unfused(sources, levels, sizes, weight_of, coefficients_of):
    """The same math with torch's own GroupNorm, resize and the scale/task torch form."""
    outs = []
    for level, size in zip(levels, sizes):
        feats = [_resize(norm(group_view(sources[j], r0, shape)[:, c0:c0 + norm.num_channels]),
                         size) for j, r0, shape, c0, norm in level]
        means = [f.mean((2, 3)) for f in feats]
        w = torch.cat([weight_of(m) for m in means], 1) / len(feats)
        mean = sum(w[:, i:i + 1] * m for i, m in enumerate(means))
        outs.append(scale_task_reference(feats, w, *coefficients_of(mean)))
    return outs


def _case(affine, g, N=2, C=16):
    """Conv outputs as DynamicHead's: rows of a plain conv, of a stacked (2C) one whose second
    half holds coarser branches to upsample, and of finer ones (one of another size, resized)."""
    norms = [nn.GroupNorm(4, C, affine=affine).double() for _ in range(3)]
    if affine:
        for n in norms:
            n.weight.data.uniform_(0.5, 1.5, generator=g)
            n.bias.data.uniform_(-1, 1, generator=g)

    def rows(channels, *sizes):
        return torch.randn(sum(N * h * w for h, w in sizes), channels, generator=g,
                           dtype=torch.float64)

    sources = [rows(C, (9, 11)), rows(2 * C, (5, 6), (3, 3)) + 2, rows(C, (5, 5), (3, 3))]
    levels = [[(0, 0, (N, 9, 11), 0, norms[0]), (1, 0, (N, 5, 6), C, norms[2])],
              [(1, 0, (N, 5, 6), 0, norms[0]), (2, 0, (N, 5, 5), 0, norms[1]),
               (1, N * 30, (N, 3, 3), C, norms[2])],
              [(1, N * 30, (N, 3, 3), 0, norms[0]), (2, N * 25, (N, 3, 3), 0, norms[1])]]
    sizes = [(9, 11), (5, 6), (3, 3)]
    lin, mlp = nn.Linear(C, 1).double(), nn.Linear(C, 4 * C).double()

    def weight_of(mean):
        return F.hardsigmoid(F.relu(lin(mean)))

    def coefficients_of(mean):
        a1, b1, a2, b2 = (F.hardsigmoid(mlp(mean)) - 0.5).split(C, 1)
        return 2 * a1 + 1, b1, 2 * a2, b2

    params = [p for m in (*norms, lin, mlp) for p in m.parameters()]
    return sources, levels, sizes, weight_of, coefficients_of, params


@pytest.mark.parametrize('affine', [True, False])
def test_folded_passes_equal_norms_resizes_and_scale_task_with_gradients(affine):
    g = torch.Generator().manual_seed(1)
    sources, levels, sizes, weight_of, coefficients_of, params = _case(affine, g)
    sources = [s.requires_grad_() for s in sources]
    assert nst.fusable(sources, levels)
    got = nst.norm_scale_task(sources, levels, sizes, weight_of, coefficients_of, params)
    ref = _unfused(sources, levels, sizes, weight_of, coefficients_of)
    for a, r, size in zip(got, ref, sizes):
        assert a.shape == (2, 16, *size) and a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    grads = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in ref]
    leaves = sources + params
    for i, (a, r) in enumerate(zip(torch.autograd.grad(got, leaves, grads),
                                   torch.autograd.grad(ref, leaves, grads))):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10, msg=f'gradient of leaf {i}')
    with torch.no_grad():  # without autograd: no sign codes, same output
        for a, r in zip(nst.norm_scale_task(sources, levels, sizes, weight_of, coefficients_of,
                                            params), ref):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_bf16_maps_compute_in_fp32_and_round_once():
    """bf16 conv outputs (CPU autocast): read as bf16, computed in fp32, output and the maps'
    gradients rounded to bf16 once; within bf16's rounding of the fp64 math on the same values."""
    g = torch.Generator().manual_seed(2)
    sources, levels, sizes, weight_of, coefficients_of, params = _case(True, g)
    low = [s.bfloat16().requires_grad_() for s in sources]
    exact = [s.bfloat16().double().requires_grad_() for s in sources]  # the same values
    got = nst.norm_scale_task(low, levels, sizes,
                              lambda m: weight_of(m.double()).float(),  # fp32 in and out
                              lambda m: tuple(t.float() for t in coefficients_of(m.double())),
                              params)
    ref = _unfused(exact, levels, sizes, weight_of, coefficients_of)
    grads = [torch.randn(r.shape, generator=g, dtype=torch.float64).bfloat16() for r in ref]
    for a, r in zip(got, ref):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.double(), r, rtol=1e-2, atol=1e-2 * r.abs().max().item())
    for a, r in zip(torch.autograd.grad(got, low, grads),
                    torch.autograd.grad(ref, exact, [t.double() for t in grads])):
        assert a.dtype == torch.bfloat16
        assert ((a.double() - r).norm() / r.norm()).item() < 1e-2


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('src,dst', [((3, 4), (6, 8)), ((4, 5), (7, 9)), ((7, 9), (4, 5)),
                                     ((1, 1), (3, 2)), ((2, 3), (2, 5))])
def test_resized_branch_gradient_is_the_resize_backward_plus_its_statistics_share(src, dst,
                                                                                 dtype):
    # a resized branch's gradient in one pass, into a strided half of the stacked rows: torch's
    # resize backward of its output-size gradient, plus k1 + k2 * r
    g = torch.Generator().manual_seed(0)
    r = _half(2, 8, *src, g, dtype)
    fine = torch.randn(2, 8, *dst, generator=g, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    k1, k2 = (torch.randn(2, 8, generator=g, dtype=dtype) for _ in range(2))
    out = _half(2, 8, *src, g, dtype).zero_()
    rest = out.as_strided((2, 8, *src), out.stride(), out.storage_offset() - 8).clone()
    cpu_ext.load().norm_scale_task_backward_resized(fine, r, k1, k2, out)
    want = (torch.ops.aten.upsample_bilinear2d_backward(fine, list(dst), list(r.shape), True)
            + k2[..., None, None] * r + k1[..., None, None])
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    # the other half of the rows is untouched
    assert torch.equal(out.as_strided((2, 8, *src), out.stride(), out.storage_offset() - 8), rest)
    with pytest.raises(RuntimeError, match='fine must be'):
        cpu_ext.load().norm_scale_task_backward_resized(fine.contiguous(), r, k1, k2, out)
    with pytest.raises(RuntimeError, match='k1, k2 must be'):
        cpu_ext.load().norm_scale_task_backward_resized(fine, r, k1[:1], k2, out)


def test_what_the_folded_passes_do_not_take():
    x = torch.randn(9, 8, dtype=torch.float64)
    gn = nn.GroupNorm(2, 8).double()

    def level(*sources):
        return [(j, 0, (1, 3, 3), 0, gn) for j in sources]

    assert nst.fusable([x], [level(0)])
    assert not nst.fusable([x.t()], [level(0)])  # rows not contiguous
    assert not nst.fusable([x.float(), x], [level(0), level(1)])  # mixed dtypes
    assert not nst.fusable([x, x], [level(0) + [(1, 0, (1, 3, 3), 0, nn.GroupNorm(4, 8))]])
    assert not nst.fusable([x], [[(0, 0, (1, 3, 3), 0, nn.BatchNorm2d(8).double())]])
    assert not nst.fusable([x] * 4, [level(0, 1, 2, 3)])  # at most 3 branches a level
    assert nst.fusable([x.bfloat16()], [level(0)])  # bf16 (autocast's convs) computes in fp32
    assert not nst.fusable([x.half()], [level(0)])


@pytest.mark.parametrize('sizes', [[(12, 13), (6, 7), (3, 4)],  # stride-2 sizes
                                   [(13, 17), (6, 9), (3, 4)],  # finer branches resized
                                   [(9, 9)], [(8, 8), (8, 8)]])
def test_dynamic_head_equals_its_unfolded_form(sizes, monkeypatch):
    """DynamicHead with its norms folded (fp64): the same outputs and every gradient as with
    the norms, resizes and scale_task run one by one; and the fold really runs."""
    torch.manual_seed(0)
    model = offsets_off_zero(DynamicHead(32, 32, 2, norm_cfg=dict(type='GN', num_groups=4)))
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model = model.double()
    feats = [torch.randn(2, 32, h, w, dtype=torch.float64) for h, w in sizes]
    calls = []
    real = nst.norm_scale_task
    results = []
    for fold in (True, False):
        monkeypatch.setattr('mmdet_dyhead.models.dynamic_head.norm_scale_task',
                            lambda *a: calls.append(1) or real(*a))
        if not fold:
            monkeypatch.setattr(DynamicHeadBlock, '_foldable', lambda self, feats: False)
        xs = [f.clone().requires_grad_() for f in feats]
        model.zero_grad()
        out = model(xs)
        g = torch.Generator().manual_seed(1)
        sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out).backward()
        with torch.no_grad():
            evaluated = model(feats)
        results.append((out, evaluated, [x.grad for x in xs] + [
            p.grad.clone() for p in model.parameters() if p.grad is not None]))
        if fold:
            assert len(calls) == 2 * len(model.blocks)
    assert len(calls) == 2 * len(model.blocks)  # none without the fold
    (out_f, eval_f, grads_f), (out_u, eval_u, grads_u) = results
    assert len(grads_f) == len(grads_u)
    for a, b in zip(out_f + eval_f, out_u + eval_u):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads_f, grads_u):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * max(1.0, b.abs().max().item()))


def test_under_bf16_autocast_the_fold_runs_and_is_as_close_to_fp32(monkeypatch):
    """Under CPU bf16 autocast every block folds (bf16 conv outputs in, bf16 out, fp32 inside),
    and its outputs and gradients are as close to the fp32 model's as the unfolded path's."""
    torch.manual_seed(0)
    model = offsets_off_zero(DynamicHead(32, 32, 2, norm_cfg=dict(type='GN', num_groups=4)))
    feats = [torch.randn(2, 32, h, w) for h, w in [(12, 13), (6, 7), (3, 4)]]
    calls = []
    real = nst.norm_scale_task
    monkeypatch.setattr('mmdet_dyhead.models.dynamic_head.norm_scale_task',
                        lambda *a: calls.append(1) or real(*a))

    def run(amp):
        xs = [f.clone().requires_grad_() for f in feats]
        model.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            out = model(xs)
        g = torch.Generator().manual_seed(1)
        sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in out).backward()
        return (torch.cat([o.float().flatten() for o in out]),
                torch.cat([x.grad.flatten() for x in xs] + [p.grad.flatten()
                                                             for p in model.parameters()]))

    fp32 = run(False)
    calls.clear()
    folded = run(True)
    assert len(calls) == len(model.blocks)
    monkeypatch.setattr(DynamicHeadBlock, '_foldable', lambda self, feats: False)
    unfolded = run(True)
    for f, u, r in zip(folded, unfolded, fp32):
        err_f, err_u = ((f - r).norm() / r.norm()).item(), ((u - r).norm() / r.norm()).item()
        assert err_f < 1.5 * err_u + 1e-3, (err_f, err_u)


def test_hooked_attentions_see_their_calls():
    """A forward hook (e.g. the attention recorder) on a module the folded passes skip turns the
    fold off, so the hook is called."""
    torch.manual_seed(0)
    model = DynamicHead(16, 16, 1, norm_cfg=dict(type='GN', num_groups=4)).eval()
    feats = [torch.randn(1, 16, s, s) for s in (8, 4)]
    block: DynamicHeadBlock = model.blocks[0]
    assert block._foldable(feats)
    seen = []
    handle = block.spatial.same.norm.register_forward_hook(lambda *a: seen.append(1))
    assert not block._foldable(feats)
    with torch.no_grad():
        model(feats)
    handle.remove()
    assert len(seen) == 2  # one per level


def _block_case(hsigmoid, affine, dtype, C=32):
    """A block with every attention weight large enough that the ReLU and hard-sigmoid gates
    cut some entries, its conv outputs' plan and moments (3 levels, the middle one resized)."""
    torch.manual_seed(0)
    block = DynamicHeadBlock(C, C, hsigmoid=hsigmoid,
                             norm_cfg=dict(type='GN', num_groups=4, affine=affine)).to(dtype)
    for m in block.modules():
        if isinstance(m, nn.GroupNorm) and affine:
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            m.weight.data.normal_(0, 0.3)
            m.bias.data.normal_(0, 0.5)
    feats = [torch.randn(2, C, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
             for h, w in [(12, 13), (6, 7), (3, 4)]]
    with torch.no_grad():
        sources, levels = block.spatial.raw(feats)
    plan = nst._Plan(sources, levels, [f.shape[-2:] for f in feats], block.scale.weight_of,
                     block.task.coefficients_of, (block.scale, block.task))
    moments = nst.channel_moments(plan.maps(sources), plan.out_sizes)
    return block, plan, moments


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('hsigmoid,affine', [('reference', True), ('paper', False),
                                             ('reference', False), ('paper', True)])
def test_native_small_math_equals_the_torch_ops_and_their_autograd(hsigmoid, affine, dtype):
    """csrc/small_math.cpp (DynamicHead's own attentions) against ``_factors``, the same math as
    torch ops through the attentions' methods, and autograd through them: every factor, every
    moment share the backward's passes take, every parameter's gradient."""
    block, plan, moments = _block_case(hsigmoid, affine, dtype)
    assert plan.native(dtype)
    params = block._fold_params()
    leaf = moments.clone().requires_grad_()
    m, a1, b1, a2, b2 = nst._factors(plan, leaf, dtype)
    native = nst._NativeSmallMath(plan, moments)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for i, span in enumerate(plan.spans()):
        want = (m[span].transpose(0, 1), a1[i], b1[i], a2[i], b2[i])
        for got, w in zip(native.levels[i], want):
            assert got.dtype == dtype and got.is_contiguous()
            torch.testing.assert_close(got, w, **tol)
    g = torch.Generator().manual_seed(3)
    d_m = torch.randn(m.shape, generator=g, dtype=dtype)
    d_coef = torch.randn(len(plan.levels), m.shape[1], 4, m.shape[2], generator=g, dtype=dtype)
    want = torch.autograd.grad((m, a1, b1, a2, b2), [leaf] + params,
                               [d_m] + [d_coef[:, :, k] for k in range(4)], allow_unused=True)
    k_levels, k_resized = nst._moment_shares(plan, want[0], dtype)
    got_levels, got_resized, by_id = native.backward(d_m, d_coef)
    assert len(got_levels) == 2 * len(plan.levels) and len(got_resized) == 2 * sum(plan.resized)
    for got, w in zip(got_levels + got_resized, k_levels + k_resized):
        torch.testing.assert_close(got, w, **tol)
    names = {id(p): n for n, p in block.named_parameters()}
    for p, w in zip(params, want[1:]):
        if w is None:  # the offset conv's, the convs' own: not the small math's
            assert id(p) not in by_id, names[id(p)]
            continue
        got = by_id[id(p)]
        assert got.shape == p.shape and got.dtype == p.dtype, names[id(p)]
        torch.testing.assert_close(got, w, **tol, msg=names[id(p)])


def test_subclassed_attentions_keep_their_own_math():
    """A subclass of an attention may change its math: the block then takes its methods (the
    torch ops), not the C++ small math, and equals the unfolded path with the subclass."""
    torch.manual_seed(0)
    block = DynamicHeadBlock(16, 16, norm_cfg=dict(type='GN', num_groups=4)).double()

    class Steeper(type(block.scale)):
        def weight_of(self, mean):
            return super().weight_of(2 * mean)

    steeper = Steeper(16).double()
    steeper.load_state_dict(block.scale.state_dict())
    block.scale = steeper
    feats = [torch.randn(2, 16, s, s, dtype=torch.float64) for s in (8, 4)]
    assert block._foldable(feats)
    seen = []
    real = nst._NativeSmallMath.__init__
    nst_init = lambda self, *a: seen.append(1) or real(self, *a)  # noqa: E731
    try:
        nst._NativeSmallMath.__init__ = nst_init
        with torch.no_grad():
            folded = block(feats)
    finally:
        nst._NativeSmallMath.__init__ = real
    assert not seen
    with torch.no_grad():
        unfolded = [block.scale_task(branches) for branches in block.spatial(feats)]
    for a, b in zip(folded, unfolded):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_native_small_math_names_bad_input():
    _, plan, moments = _block_case('reference', True, torch.float64)
    with pytest.raises(RuntimeError, match='moments must be contiguous'):
        nst._NativeSmallMath(plan, moments.float())
    native = nst._NativeSmallMath(plan, moments)
    n0, task = plan.norms[0], plan.attentions[1]
    args = [moments, plan.count_list, plan.level_count_list, plan.level_of, len(plan.levels),
            n0.num_groups, n0.eps, native.norm_params, native.norm_of, native.attention_params,
            False, task.lambda_a, [*task.init_a, *task.init_b]]
    bad = dict(enumerate(args))
    bad[8] = native.norm_of + len(native.norm_params)  # past the norms given
    with pytest.raises(RuntimeError, match='norm_of must index'):
        cpu_ext.load().small_math_forward(*bad.values())
    bad[8] = native.norm_of[:-1]
    with pytest.raises(RuntimeError, match="norm_of must give each branch's norm"):
        cpu_ext.load().small_math_forward(*bad.values())
    bad = dict(enumerate(args))
    bad[5] = 3  # 32 channels do not split into 3 groups
    with pytest.raises(RuntimeError, match="split into the norm's groups"):
        cpu_ext.load().small_math_forward(*bad.values())
