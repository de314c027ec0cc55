"""The layout changes at DynamicHead's edges (ops/layout.py, csrc/layout.cpp): same values as
torch's copies, gradients in the inputs' own layout."""
import pytest
import torch

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.ops import cpu_ext
from mmdet_dyhead.ops.layout import _tiled, to_channels_last, to_contiguous

CL = torch.channels_last


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('shape', [(2, 256, 64, 64), (1, 37, 5, 33), (3, 1, 2, 2), (1, 70, 1, 1)])
def test_to_contiguous_is_the_same_map_contiguous(dtype, shape):
    """Maps whose pixels and channels are not whole tiles (32 x 32), and maps either layout fits."""
    assert cpu_ext.load() is not None
    x = torch.randn(shape).to(dtype).contiguous(memory_format=CL)
    y = to_contiguous(x)
    assert y.is_contiguous() and y.dtype == dtype
    assert torch.equal(y, x)
    if not x.is_contiguous():
        assert _tiled(x)  # the C++ copy ran, not torch's


def test_to_contiguous_passes_the_gradient_through():
    x = torch.randn(2, 40, 9, 7).contiguous(memory_format=CL).requires_grad_()
    g = torch.randn(2, 40, 9, 7)
    to_contiguous(x).backward(g)
    assert torch.equal(x.grad, g)


def test_to_channels_last_gives_the_gradient_back_contiguous():
    x = torch.randn(2, 40, 33, 35, requires_grad=True)
    y = to_channels_last(x)
    assert y.is_contiguous(memory_format=CL) and not y.is_contiguous() and torch.equal(y, x)
    g = torch.randn(2, 40, 33, 35).contiguous(memory_format=CL)
    y.backward(g)
    assert x.grad.is_contiguous() and torch.equal(x.grad, g)


def test_neck_outputs_and_input_gradients_are_contiguous_like_its_inputs():
    torch.manual_seed(0)
    neck = DynamicHead(16, 16, num_blocks=1, zero_init_offset=False)
    xs = [torch.randn(2, 16, s, s, requires_grad=True) for s in (40, 20, 10)]
    outs = neck(xs)
    assert all(o.is_contiguous() for o in outs)
    sum((o * o).sum() for o in outs).backward()
    assert all(x.grad.is_contiguous() for x in xs)
