"""The single-input form of the deformable conv that ONNX export traces.

``SpatialAwareAttention`` samples all levels in one call of ``mmdet_dyhead::deform_conv2d_levels``
(lists in, lists out). An ONNX graph wants one node per convolution, so while exporting
(``torch.onnx.is_in_onnx_export()``) each conv goes through ``mmdet_dyhead::modulated_deform_conv2d``
instead: the same computation (it calls the levels op with one level), one tensor in, one out,
which ``mmdet_dyhead.deploy.symbolic`` turns into the runtime's own op (ONNX ``DeformConv`` for
onnxruntime, ``org.openvinotoolkit::DeformableConv2D`` for OpenVINO).
"""
from typing import List, Optional

import torch
from torch import Tensor

from .deform_conv import _out_size, modulated_deform_conv2d


@torch.library.custom_op('mmdet_dyhead::modulated_deform_conv2d', mutates_args=())
def modulated_deform_conv2d_op(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                               bias: Optional[Tensor], stride: List[int], padding: List[int],
                               dilation: List[int]) -> Tensor:
    """(N, C_in, H, W) -> (N, C_out, Ho, Wo), mmcv's semantics; see ``modulated_deform_conv2d``."""
    return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding,
                                   dilation).contiguous()


@modulated_deform_conv2d_op.register_fake
def _(x, offset, mask, weight, bias, stride, padding, dilation):
    ho = _out_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
    wo = _out_size(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1])
    return x.new_empty(x.shape[0], weight.shape[0], ho, wo)
