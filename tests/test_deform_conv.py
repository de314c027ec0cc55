"""The gather + GEMM deformable conv equals mmcv's op: outputs and every gradient."""
import pytest
import torch
from mmcv.ops import modulated_deform_conv2d as mmcv_dcn

from mmdet_dyhead.ops import deform_conv, modulated_deform_conv2d


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


def test_matches_mmcv_float32_without_bias_over_chunks(monkeypatch):
    """float32 at 1e-4 relative, with positions spread over several chunks."""
    monkeypatch.setattr(deform_conv, 'CHUNK_ELEMENTS', 37 * 9 * 16)
    for stride in (1, 2):
        _compare(_case(2, 16, 8, 13, 11, stride, 2.0, bias=False, dtype=torch.float32),
                 stride, rtol=1e-4)


def test_zero_offsets_unit_mask_is_a_plain_conv():
    x = torch.randn(2, 6, 9, 10)
    w = torch.randn(4, 6, 3, 3)
    for stride in (1, 2):
        ref = torch.nn.functional.conv2d(x, w, None, stride, 1)
        off = torch.zeros(2, 18, *ref.shape[-2:])
        mask = torch.ones(2, 9, *ref.shape[-2:])
        torch.testing.assert_close(modulated_deform_conv2d(x, off, mask, w, None, stride, 1),
                                   ref, rtol=1e-5, atol=1e-5)


def test_inf_next_to_invalid_corner_does_not_leak():
    """Corners outside the map contribute exactly zero, even when the nearest pixel is inf."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = float('inf')
    w = torch.ones(1, 1, 3, 3)
    off = torch.full((1, 18, 4, 4), 0.0)
    off[:, 0::2] = -10.0  # every tap far above the map
    out = modulated_deform_conv2d(x, off, torch.ones(1, 9, 4, 4), w, None, 1, 1)
    assert torch.equal(out, torch.zeros_like(out))


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
