"""ONNX for each runtime: the deformable conv as the runtime's own operator, no custom op library.

    onnxruntime  ONNX ``DeformConv`` (opset 19): inputs X, W, offset, B, mask; offsets as (dy, dx)
                 per tap, bilinear with zeros outside the map: mmcv's rule.
    openvino     ``org.openvinotoolkit::DeformableConv2D`` (its ONNX reader has no rule for
                 ``DeformConv``): inputs x, offsets, weights, mask -> DeformableConvolution-8.
                 Its reader leaves ``bilinear_interpolation_pad`` at 0, which moves a sample
                 within one pixel outside the map onto the border, where mmcv interpolates with
                 zeros. So x gets an explicit ring of zeros (Pad) and the conv no padding: the
                 same taps, and every sample near the border now interpolates with that ring.

The symbolic functions serve the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``):
it traces the model once with the real op, so every shape-dependent branch of the neck runs as in
PyTorch; see docs/deploy.md for why not the dynamo exporter.
"""
import contextlib
from typing import Iterator

import torch

BACKENDS = ('onnxruntime', 'openvino')
OPSET = 19
CUSTOM_OPSETS = {'onnxruntime': {}, 'openvino': {'org.openvinotoolkit': 1}}
_OP = 'mmdet_dyhead::modulated_deform_conv2d'
_state = dict(backend=None)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    return backend


def _ints(g, value):
    from torch.onnx import symbolic_helper
    return [int(v) for v in symbolic_helper._maybe_get_const(value, 'is')]


def _deform_conv_symbolic(g, x, offset, mask, weight, bias, stride, padding, dilation):
    from torch.onnx import symbolic_helper
    stride, padding, dilation = _ints(g, stride), _ints(g, padding), _ints(g, dilation)
    pads = padding + padding  # (top, left, bottom, right)
    has_bias = not symbolic_helper._is_none(bias)
    if _state['backend'] == 'openvino':
        ring = torch.tensor([0, 0, padding[0], padding[1], 0, 0, padding[0], padding[1]])
        x = g.op('Pad', x, g.op('Constant', value_t=ring))
        y = g.op('org.openvinotoolkit::DeformableConv2D', x, offset, weight, mask,
                 strides_i=stride, pads_i=[0, 0, 0, 0], dilations_i=dilation, group_i=1,
                 deformable_groups_i=1)
        if has_bias:
            shape = g.op('Constant', value_t=torch.tensor([1, -1, 1, 1], dtype=torch.int64))
            y = g.op('Add', y, g.op('Reshape', bias, shape))
        return y
    if not has_bias:  # DeformConv's optional B comes before mask: an explicit zero bias
        cout = symbolic_helper._get_tensor_dim_size(weight, 0)
        bias = g.op('Constant', value_t=torch.zeros(cout))
    kernel = [symbolic_helper._get_tensor_dim_size(weight, i) for i in (2, 3)]
    return g.op('DeformConv', x, weight, offset, bias, mask, strides_i=stride, pads_i=pads,
                dilations_i=dilation, group_i=1, offset_group_i=1, kernel_shape_i=kernel)


@contextlib.contextmanager
def onnx_backend(backend: str) -> Iterator[None]:
    """Within: ``torch.onnx.export(..., dynamo=False, opset_version=OPSET)`` writes each
    deformable conv of DynamicHead as ``backend``'s operator."""
    check_backend(backend)
    from ..ops import deform_conv_export  # noqa: F401  (registers the op)
    torch.onnx.register_custom_op_symbolic(_OP, _deform_conv_symbolic, OPSET)
    previous, _state['backend'] = _state['backend'], backend
    try:
        yield
    finally:
        _state['backend'] = previous
        torch.onnx.unregister_custom_op_symbolic(_OP, OPSET)
