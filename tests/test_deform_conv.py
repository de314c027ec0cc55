"""The gather + GEMM deformable conv equals mmcv's op: outputs and every gradient.

Every test runs twice: with the fused C++ sampling loops (the default on CPU) and with the
pure-torch loops (what runs without a compiler).
"""
import pytest
import torch
from conftest import DEVICE
from mmcv.ops import modulated_deform_conv2d as mmcv_dcn

from mmdet_dyhead.ops import (
    cpu_ext,
    deform_conv,
    modulated_deform_conv2d,
    modulated_deform_conv2d_levels,
)


@pytest.fixture(autouse=True, params=['cpp loops', 'torch loops'])
def loops(request, monkeypatch):
    if request.param == 'cpp loops' and DEVICE.type != 'cpu':
        pytest.skip('the C++ sampling loops are CPU code')
    if request.param == 'torch loops':
        monkeypatch.setattr(deform_conv, 'USE_CPU_EXT', False)
    else:
        assert cpu_ext.load() is not None, 'the C++ sampling loops did not build'
    return request.param


def test_the_default_path_uses_the_loops_under_test(loops):
    ext = deform_conv._cpp(torch.zeros(5, 3))
    assert (ext is not None) == (loops == 'cpp loops')


def _case(N, C, Cout, H, W, stride, offset_scale, bias=True, zero_offset=False, dtype=torch.float64):
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    x = torch.randn(N, C, H, W, dtype=dtype)
    off = torch.zeros(N, 18, Ho, Wo, dtype=dtype) if zero_offset else \
        torch.randn(N, 18, Ho, Wo, dtype=dtype) * offset_scale
    mask = torch.rand(N, 9, Ho, Wo, dtype=dtype)
    w = torch.randn(Cout, C, 3, 3, dtype=dtype) * 0.1
    b = torch.randn(Cout, dtype=dtype) if bias else None
    return [t.requires_grad_() if t is not None else None for t in (x, off, mask, w, b)]


def _mmcv(x, off, mask, w, b, stride, pad, dil):
    return mmcv_dcn(x.contiguous(), off, mask, w, b, stride, pad, dil, 1, 1)


def _compare(tensors, stride, rtol):
    live = [t for t in tensors if t is not None]
    ref_out = _mmcv(*tensors, stride, 1, 1)
    out = modulated_deform_conv2d(*tensors, stride, 1, 1)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=rtol * ref_out.abs().max().item())
    g = torch.randn_like(ref_out, memory_format=torch.contiguous_format)
    ref = torch.autograd.grad(ref_out, live, g)
    ours = torch.autograd.grad(out, live, g)
    for name, a, r in zip(['x', 'offset', 'mask', 'weight', 'bias'], ours, ref):
        scale = r.abs().max().item() or 1.0
        torch.testing.assert_close(a, r, rtol=rtol, atol=rtol * scale, msg=f'gradient of {name}')


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('H,W', [(7, 9), (10, 6), (1, 1), (2, 5)])
def test_matches_mmcv_random_offsets(stride, H, W):
    _compare(_case(2, 5, 4, H, W, stride, offset_scale=1.5), stride, rtol=1e-6)


@pytest.mark.parametrize('stride', [1, 2])
def test_matches_mmcv_integer_positions(stride):
    """Zero offsets put taps exactly on pixels and on the -1 border: sub-gradients must agree."""
    _compare(_case(2, 4, 3, 9, 8, stride, 0, zero_offset=True), stride, rtol=1e-6)
    # integer offsets, some far outside the map
    tensors = _case(1, 3, 2, 6, 7, stride, 0)
    with torch.no_grad():
        tensors[1].copy_(torch.randint(-8, 8, tensors[1].shape).double())
    _compare(tensors, stride, rtol=1e-6)


@pytest.mark.parametrize('C', [16, 48])
def test_matches_mmcv_float32_without_bias_over_chunks(monkeypatch, C):
    """float32 at 1e-4 relative, with positions spread over several chunks of unequal share
    (and, at 48 channels on 2 threads, the backward's channel slices with their longer chunks)."""
    monkeypatch.setattr(deform_conv, 'CHUNK_ELEMENTS', 37 * 9 * 16)
    for stride in (1, 2):
        _compare(_case(2, C, 8, 13, 11, stride, 2.0, bias=False, dtype=torch.float32),
                 stride, rtol=1e-4)


def test_matches_mmcv_on_a_large_map():
    """Enough positions (2 x 40 x 36) that the offset and mask gradients are put together by
    several threads."""
    torch.manual_seed(0)
    _compare(_case(2, 4, 3, 40, 36, 1, 1.5), 1, rtol=1e-6)


def test_zero_offsets_unit_mask_is_a_plain_conv():
    x = torch.randn(2, 6, 9, 10)
    w = torch.randn(4, 6, 3, 3)
    for stride in (1, 2):
        ref = torch.nn.functional.conv2d(x, w, None, stride, 1)
        off = torch.zeros(2, 18, *ref.shape[-2:])
        mask = torch.ones(2, 9, *ref.shape[-2:])
        torch.testing.assert_close(modulated_deform_conv2d(x, off, mask, w, None, stride, 1),
                                   ref, rtol=1e-5, atol=1e-5)


def test_an_empty_batch_gives_empty_outputs_and_zero_weight_gradient():
    """No output positions (a batch of 0, alone or next to a level that has some): the weight's
    gradient is exactly the other levels' (zero alone), not whatever memory held."""
    torch.manual_seed(0)
    w = torch.randn(4, 8, 3, 3, requires_grad=True)
    x = torch.randn(0, 8, 5, 5, requires_grad=True)
    out = modulated_deform_conv2d(x, torch.zeros(0, 18, 5, 5), torch.ones(0, 9, 5, 5), w, None, 1, 1)
    assert out.shape == (0, 4, 5, 5)
    (gw,) = torch.autograd.grad(out.sum(), [w])
    assert torch.equal(gw, torch.zeros_like(w))
    xs = [torch.randn(1, 8, 6, 6), torch.randn(0, 8, 3, 3)]
    offs = [torch.randn(1, 18, 6, 6), torch.zeros(0, 18, 3, 3)]
    masks = [torch.rand(1, 9, 6, 6), torch.ones(0, 9, 3, 3)]
    outs = modulated_deform_conv2d_levels(xs, offs, masks, w, None, 1, 1, 1)
    (gw,) = torch.autograd.grad(sum(o.sum() for o in outs), [w])
    (ref,) = torch.autograd.grad(_mmcv(xs[0], offs[0], masks[0], w, None, 1, 1, 1).sum(), [w])
    torch.testing.assert_close(gw, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_inf_next_to_invalid_corner_does_not_leak():
    """Corners outside the map contribute exactly zero, even when the nearest pixel is inf."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = float('inf')
    w = torch.ones(1, 1, 3, 3)
    off = torch.full((1, 18, 4, 4), 0.0)
    off[:, 0::2] = -10.0  # every tap far above the map
    out = modulated_deform_conv2d(x, off, torch.ones(1, 9, 4, 4), w, None, 1, 1)
    assert torch.equal(out, torch.zeros_like(out))


def test_pixels_no_tap_reaches_get_zero_gradient():
    """Each pixel's gradient row is zeroed at its first contribution (no zero fill of the map);
    pixels no tap reaches must still come out exactly zero, whatever the memory held before."""
    torch.manual_seed(0)
    x = torch.randn(2, 20, 9, 8, requires_grad=True)
    w = torch.randn(4, 20, 3, 3)
    off = torch.zeros(2, 18, 9, 8)
    off[:, :, :, 4:] = -40.0  # taps of the right half far outside: pixels there go unreached
    mask = torch.rand(2, 9, 9, 8)
    for _ in range(3):  # leave NaN in freed memory, which the gradient's buffer may reuse
        junk = torch.full((2, 20, 9, 8), float('nan')).contiguous(memory_format=torch.channels_last)
        del junk
        out = modulated_deform_conv2d(x, off, mask, w, None, 1, 1)
        (grad,) = torch.autograd.grad(out.sum(), [x])
        ref = torch.autograd.grad(_mmcv(x, off, mask, w, None, 1, 1, 1).sum(), [x])[0]
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-4)
        assert (grad[..., 6:] == 0).all() and (grad[..., :3] != 0).any()


def test_shape_errors_name_the_problem():
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match='offset must have shape'):
        modulated_deform_conv2d(x, torch.zeros(1, 18, 4, 4), torch.ones(1, 9, 8, 8), w, None, 1, 1)
    with pytest.raises(ValueError, match='mask must have shape'):
        modulated_deform_conv2d(x, torch.zeros(1, 18, 8, 8), torch.ones(1, 9, 4, 4), w, None, 1, 1)
    with pytest.raises(ValueError, match='input channels'):
        modulated_deform_conv2d(x[:, :3], torch.zeros(1, 18, 8, 8), torch.ones(1, 9, 8, 8), w,
                                None, 1, 1)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('couts,dtype', [([3, 6, 6, 6], torch.float64),
                                         ([3, 6, 6, 6], torch.float32),
                                         ([6, 3, 3, 2], torch.float32),
                                         ([2, 4, 4, 4], torch.float32)])
def test_levels_in_one_call_equal_separate_calls(stride, couts, dtype):
    """Inputs of different sizes (odd ones), some using only the weight's first channels, in one
    call: each output and every gradient equals its own call. The groups' weight-gradient rows
    are written by the first product that reaches them and added to after (growing, shrinking,
    some rows never reached)."""
    torch.manual_seed(0)
    sizes = [(9, 7), (5, 4), (3, 2), (1, 1)]
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    w = (torch.randn(6, 5, 3, 3, dtype=dtype) * 0.1).requires_grad_()
    b = torch.randn(6, dtype=dtype, requires_grad=True)
    xs, offs, masks = [], [], []
    for h, wd in sizes:
        ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
        xs.append(torch.randn(2, 5, h, wd, dtype=dtype, requires_grad=True))
        offs.append((torch.randn(2, 18, ho, wo, dtype=dtype) * 1.5).requires_grad_())
        masks.append(torch.rand(2, 9, ho, wo, dtype=dtype, requires_grad=True))
    leaves = [w, b, *xs, *offs, *masks]
    got = modulated_deform_conv2d_levels(xs, offs, masks, w, b, stride, 1, 1, couts)
    ref = [modulated_deform_conv2d(x, o, m, w[:c], b[:c], stride, 1, 1)
           for x, o, m, c in zip(xs, offs, masks, couts)]
    gs = [torch.randn_like(r) for r in ref]
    for g_, r in zip(got, ref):
        torch.testing.assert_close(g_, r, rtol=tol, atol=tol)
    grads = torch.autograd.grad(got, leaves, gs)
    ref_grads = torch.autograd.grad(ref, leaves, gs)
    for i, (a, r) in enumerate(zip(grads, ref_grads)):
        torch.testing.assert_close(a, r, rtol=tol, atol=tol, msg=f'gradient {i}')


def test_levels_argument_errors_name_the_problem():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(2, 4, 3, 3)
    off, mask = torch.zeros(1, 18, 6, 6), torch.ones(1, 9, 6, 6)
    with pytest.raises(ValueError, match='as many inputs, offsets and masks'):
        modulated_deform_conv2d_levels([x, x], [off], [mask], w, None, 1, 1)
    with pytest.raises(ValueError, match='out_channels'):
        modulated_deform_conv2d_levels([x], [off], [mask], w, None, 1, 1, 1, [3])
    with pytest.raises(ValueError, match='input 1: offset must have shape'):
        modulated_deform_conv2d_levels([x, x], [off, off[..., :3]], [mask, mask], w, None, 1, 1)


@pytest.mark.cpu_only
def test_onednn_gemm_equals_torch_mm():
    """The CPU GEMM (oneDNN where it is right, see _linear) on the transposed views it is given."""
    a, w = torch.randn(37, 50), torch.randn(11, 50)
    ref = a.double() @ w.double().t()
    for x, y in ((a, w), (a.t().contiguous().t(), w), (a, w.t().contiguous().t())):
        torch.testing.assert_close(deform_conv._linear(x, y).double(), ref, rtol=1e-5, atol=1e-4)


def _gemm_ops_in_backward(library: str, stride: int) -> set:
    """The torch.mm ops the profiler records in the C++ conv's backward with ``library`` (which
    has its GEMM ranges); its float32 gradients checked against mmcv's on the way (several
    chunks, 48 channels: two channel slices on two threads)."""
    from torch.profiler import ProfilerActivity, profile
    assert deform_conv.backward_gemm(library) == library
    tensors = _case(2, 48, 8, 13, 11, stride, 2.0, bias=False, dtype=torch.float32)
    _compare(tensors, stride, rtol=1e-4)
    out = modulated_deform_conv2d(*tensors, stride, 1, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out.sum().backward()
    names = {e.name for e in prof.events()}
    assert 'mmdet_dyhead::gemm' in names
    return {n for n in names if n.startswith(('aten::mm', 'aten::addmm'))}


@pytest.mark.cpu_only
def test_backward_gemm_library_is_used_and_matches_mmcv(loops, monkeypatch):
    """Both libraries of the backward's fp32 GEMMs give mmcv's gradients; MKL's products run
    through torch.mm (seen by the profiler on the calling thread), oneDNN's do not."""
    if loops != 'cpp loops':
        pytest.skip("the library is the C++ conv's")
    monkeypatch.setattr(deform_conv, 'CHUNK_ELEMENTS', 37 * 9 * 16)
    before = deform_conv.backward_gemm()
    try:
        for stride in (1, 2):
            assert not _gemm_ops_in_backward('onednn', stride)
            if torch.backends.mkl.is_available():
                assert _gemm_ops_in_backward('mkl', stride)
    finally:
        deform_conv.backward_gemm(before)


@pytest.mark.cpu_only
def test_backward_gemm_auto_takes_mkl_on_intel_only(loops, monkeypatch):
    if loops != 'cpp loops':
        assert deform_conv.backward_gemm('auto') is None  # no C++ conv: nothing to choose
        return
    from mmdet_dyhead.utils.machine import cpuinfo_field
    before = deform_conv.backward_gemm()
    try:
        intel = cpuinfo_field('vendor_id') == 'GenuineIntel'
        want = 'mkl' if intel and torch.backends.mkl.is_available() else 'onednn'
        assert deform_conv.backward_gemm('auto') == want
        assert deform_conv.backward_gemm() == want  # reading does not change it
        with pytest.raises(ValueError, match="backward GEMM library must be one of.*'blas'"):
            deform_conv.backward_gemm('blas')
        assert deform_conv.backward_gemm() == want
        # the environment variable, applied when the C++ code loads
        module = cpu_ext.load()
        monkeypatch.setenv('MMDET_DYHEAD_BACKWARD_GEMM', 'onednn')
        cpu_ext.apply_env(module)
        assert deform_conv.backward_gemm() == 'onednn'
        monkeypatch.setenv('MMDET_DYHEAD_BACKWARD_GEMM', 'openblas')
        with pytest.raises(ValueError, match="MMDET_DYHEAD_BACKWARD_GEMM must be.*'openblas'"):
            cpu_ext.apply_env(module)
    finally:
        deform_conv.backward_gemm(before)


@pytest.mark.parametrize('wanted', [('x', 'weight'), ('x',), ('offset',), ('mask', 'bias'),
                                    ('weight',)])
def test_gradients_of_some_inputs_only(wanted):
    """Fixed offsets (a frozen offset conv), a frozen conv, ...: the backward returns only the
    wanted gradients, each equal to mmcv's (an op's unwanted outputs must not alias)."""
    torch.manual_seed(0)
    tensors = _case(2, 4, 5, 6, 7, 1, 1.5)
    names = ['x', 'offset', 'mask', 'weight', 'bias']
    for name, t in zip(names, tensors):
        t.requires_grad_(name in wanted)
    live = [t for n, t in zip(names, tensors) if n in wanted]
    g = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    ours = torch.autograd.grad(modulated_deform_conv2d(*tensors, 1, 1, 1), live, g)
    ref = torch.autograd.grad(_mmcv(*tensors, 1, 1, 1), live, g)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-7 * r.abs().max().item())


def test_registered_op_passes_torch_library_opcheck():
    """The kernel is a registered op (``mmdet_dyhead::deform_conv2d_levels``): its schema, fake
    implementation (what torch.export / torch.compile trace), autograd registration and the
    backward op agree with the real thing, as torch.library.opcheck tests them."""
    from mmdet_dyhead.ops.deform_conv import deform_conv2d_levels_op
    torch.manual_seed(0)
    xs = [torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 4, 4, 3, dtype=torch.float64, requires_grad=True)]
    offs = [torch.randn(2, 18, 7, 6, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 18, 4, 3, dtype=torch.float64, requires_grad=True)]
    masks = [torch.rand(2, 9, 7, 6, dtype=torch.float64, requires_grad=True),
             torch.rand(2, 9, 4, 3, dtype=torch.float64, requires_grad=True)]
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(deform_conv2d_levels_op,
                          (xs, offs, masks, w, b, [1, 1], [1, 1], [1, 1], [3, 6]))
    groups = deform_conv2d_levels_op(xs, offs, masks, w, b, [1, 1], [1, 1], [1, 1], [3, 6])
    assert [tuple(g.shape) for g in groups] == [(2 * 7 * 6, 3), (2 * 4 * 3, 6)]


def test_weight_gradient_comes_in_the_parameters_layout():
    """DynamicHead hands the op its weights stacked tap-major (channels-last strides); the weight's
    gradient still comes back contiguous, the parameters' layout, so autograd keeps the views of
    it as each parameter's .grad instead of copying them into that layout."""
    from mmdet_dyhead.models.deform_conv_norm import tap_major
    torch.manual_seed(0)
    x = torch.randn(2, 16, 7, 6)
    off, mask = torch.randn(2, 18, 7, 6), torch.rand(2, 9, 7, 6)
    a = torch.nn.Parameter(torch.randn(5, 16, 3, 3))
    b = torch.nn.Parameter(torch.randn(3, 16, 3, 3))
    out = modulated_deform_conv2d(x, off, mask, tap_major(a, b), None, 1, 1)
    g = torch.randn_like(out)
    out.backward(g)
    ref_a, ref_b = torch.autograd.grad(
        _mmcv(x, off, mask, torch.cat([a, b]), None, 1, 1, 1), [a, b], g)
    # both .grad tensors lie in the op's one gradient: no copy was made
    assert a.grad.untyped_storage().data_ptr() == b.grad.untyped_storage().data_ptr()
    for p, ref in ((a, ref_a), (b, ref_b)):
        assert p.grad.is_contiguous()
        torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_flop_counter_sees_the_registered_op_by_name():
    from mmengine.analysis import FlopAnalyzer

    class Conv(torch.nn.Module):
        def forward(self, x, off, mask, w):
            return modulated_deform_conv2d(x, off, mask, w, None, 1, 1)

    x, off, mask, w = torch.randn(1, 4, 6, 5), torch.randn(1, 18, 6, 5), torch.rand(1, 9, 6, 5), \
        torch.randn(3, 4, 3, 3)
    from mmdet_dyhead.utils.flops import DCN_OP_HANDLES
    analyzer = FlopAnalyzer(Conv(), (x, off, mask, w))
    for op, handle in DCN_OP_HANDLES.items():
        analyzer.set_op_handle(op, handle)
    analyzer.unsupported_ops_warnings(False)
    assert analyzer.total() == 6 * 5 * 3 * 4 * 9
    assert not any('deform' in op for op in analyzer.unsupported_ops())


def _rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item()


@pytest.mark.cpu_only
@pytest.mark.parametrize('H,W', [(9, 11), (3, 300)])
def test_bf16_autocast_computes_in_bf16_within_tolerance(H, W, monkeypatch):
    """Under torch.autocast('cpu') the conv runs on bf16 rows, columns and GEMMs (as autocast runs
    a conv) with fp32 positions and sums: output and every gradient within 1% (relative L2) of
    mmcv's op in fp64; bf16's own rounding is 0.4%. A 300-wide map: positions in bf16 would lose
    their fraction past 256 and miss by far more."""
    torch.manual_seed(0)
    tensors = _case(2, 20, 8, H, W, 1, 1.5)  # 20 channels: 16-lane vectors and a tail
    g = torch.randn(2, 8, H, W, dtype=torch.float64)
    live = [t for t in tensors if t is not None]
    ref_out = _mmcv(*tensors, 1, 1, 1)
    ref = torch.autograd.grad(ref_out, live, g)
    low = [t.detach().float().requires_grad_() for t in live]
    # the GEMMs' dtype: the torch loops call _linear; the C++ conv multiplies columns of the
    # data's dtype by the _kc_weight matrix, whose dtype it checks equals the data's
    gemm_dtypes = []
    linear, kc_weight = deform_conv._linear, deform_conv._kc_weight
    monkeypatch.setattr(deform_conv, '_linear',
                        lambda a, w, b=None: gemm_dtypes.append(a.dtype) or linear(a, w, b))
    monkeypatch.setattr(deform_conv, '_kc_weight',
                        lambda w, dt: gemm_dtypes.append(dt) or kc_weight(w, dt))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = modulated_deform_conv2d(*low, 1, 1, 1)
    assert out.dtype == torch.bfloat16 and set(gemm_dtypes) == {torch.bfloat16}
    grads = torch.autograd.grad(out, low, g.to(out.dtype))
    assert _rel(out, ref_out) < 0.01
    for name, a, r, t in zip(['x', 'offset', 'mask', 'weight', 'bias'], grads, ref, low):
        assert a.dtype == t.dtype == torch.float32, name  # fp32 master weights keep fp32 grads
        assert _rel(a, r) < 0.01, (name, _rel(a, r))


@pytest.mark.cpu_only
def test_bf16_model_keeps_positions_in_fp32():
    """A bf16 model (weights and inputs bf16, no autocast) samples at fp32 positions: on a
    300-wide map its output and gradients stay within 1% of fp64 on the same (bf16) inputs."""
    torch.manual_seed(0)
    tensors = [t.detach().bfloat16().double().requires_grad_()
               for t in _case(1, 8, 4, 3, 300, 1, 1.5)]
    live = tensors
    g = torch.randn(1, 4, 3, 300, dtype=torch.float64)
    ref_out = _mmcv(*tensors, 1, 1, 1)
    ref = torch.autograd.grad(ref_out, live, g)
    low = [t.detach().bfloat16().requires_grad_() for t in live]
    out = modulated_deform_conv2d(*low, 1, 1, 1)
    assert out.dtype == torch.bfloat16
    assert _rel(out, ref_out) < 0.01
    for name, a, r in zip(['x', 'offset', 'mask', 'weight', 'bias'],
                          torch.autograd.grad(out, low, g.bfloat16()), ref):
        assert a.dtype == torch.bfloat16 and _rel(a, r) < 0.01, (name, _rel(a, r))


def test_registered_op_passes_opcheck_with_bf16_data():
    """bf16 data with fp32 offsets, masks and weight (what autocast hands the op): the fake
    implementations give the real outputs' dtypes, forward and backward."""
    from mmdet_dyhead.ops.deform_conv import deform_conv2d_levels_op
    torch.manual_seed(0)
    xs = [torch.randn(2, 4, 7, 6).bfloat16().requires_grad_()]
    offs = [torch.randn(2, 18, 7, 6, requires_grad=True)]
    masks = [torch.rand(2, 9, 7, 6, requires_grad=True)]
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    torch.library.opcheck(deform_conv2d_levels_op,
                          (xs, offs, masks, w, b, [1, 1], [1, 1], [1, 1], [6]))


def test_channels_last_offsets_and_masks_give_the_same_output():
    """Offsets and masks from a channels-last conv (what a channels-last model hands over) are
    strided per position: the same result as contiguous ones, not an error."""
    torch.manual_seed(0)
    x, off, mask, w, b = (t.detach() for t in _case(2, 4, 5, 6, 7, 1, 1.5))
    ref = modulated_deform_conv2d(x, off, mask, w, b, 1, 1, 1)
    cl = torch.channels_last
    out = modulated_deform_conv2d(x.to(memory_format=cl), off.to(memory_format=cl),
                                  mask.to(memory_format=cl), w, b, 1, 1, 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_tap_major_weight_is_the_gemm_matrix_without_a_copy():
    """A weight stored tap-major (as the spatial-aware attention passes its stacked convs) is
    the C++ conv's GEMM matrix as a view; its gradient comes back in the same memory order, and
    outputs and gradients equal those of the same weight stored contiguously."""
    from mmdet_dyhead.models.deform_conv_norm import tap_major
    torch.manual_seed(0)
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    wt = tap_major(w)
    assert wt.shape == w.shape and torch.equal(wt, w)
    assert deform_conv._kc_weight(wt, wt.dtype).data_ptr() == wt.data_ptr()
    x, off, mask = _case(2, 5, 4, 6, 7, 1, 1.5)[:3]
    outs, grads = [], []
    for weight in (w, wt):
        weight = weight.detach().requires_grad_()
        out = modulated_deform_conv2d(x, off, mask, weight, None, 1, 1)
        outs.append(out)
        grads.append(torch.autograd.grad(out.sum(), [x, off, mask, weight]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_eager_calls_skip_the_registered_op_with_the_same_bits(monkeypatch):
    """Eager autograd runs the registered op's own forward and backward functions without its
    dispatch (``_EagerLevels``): the same outputs and gradients, bit for bit, as through the op;
    under a dispatch mode (fake tensors, FLOP counters) the op itself is called."""
    from torch.utils._python_dispatch import TorchDispatchMode
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    leaves = [w, b]
    xs, offs, masks = [], [], []
    for s in (6, 3):
        xs.append(torch.randn(2, 4, s, s, dtype=torch.float64, requires_grad=True))
        offs.append(torch.randn(2, 18, s, s, dtype=torch.float64, requires_grad=True))
        masks.append(torch.rand(2, 9, s, s, dtype=torch.float64, requires_grad=True))
    leaves += xs + offs + masks

    def run():
        outs = modulated_deform_conv2d_levels(xs, offs, masks, w, b, 1, 1, 1, [6, 3])
        g = torch.Generator().manual_seed(1)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))

    called = []
    real = deform_conv._EagerLevels.apply
    monkeypatch.setattr(deform_conv._EagerLevels, 'apply',
                        lambda *a: called.append(1) or real(*a))
    eager = run()
    assert called
    monkeypatch.setattr(deform_conv, '_eager', lambda tensors: False)
    called.clear()
    through_op = run()
    assert not called
    for a, r in zip(eager, through_op):
        assert torch.equal(a, r)
    monkeypatch.undo()

    class Seen(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    seen = []
    with torch.no_grad(), Seen():
        modulated_deform_conv2d_levels(xs, offs, masks, w, b, 1, 1, 1)
    assert 'mmdet_dyhead.deform_conv2d_levels.default' in seen
