"""The deformable-conv plumbing under the spatial-aware attention: which kernel runs, a conv + norm
module that keeps mmcv's weights and keys, and the helpers that let two convs share one sampling.

Nothing here is one of the paper's ideas; ``attentions.SpatialAwareAttention`` is built from it.
"""
import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.ops import ModulatedDeformConv2d
from mmcv.ops import modulated_deform_conv2d as mmcv_modulated_deform_conv2d
from torch import Tensor, nn

from ..ops import modulated_deform_conv2d


@functools.lru_cache(maxsize=None)
def _mmcv_has_cuda() -> bool:
    from mmcv.ops import get_compiling_cuda_version
    return get_compiling_cuda_version() not in ('not available', '')


def resolve_dcn_impl(impl: str, x: Tensor) -> str:
    """'auto' picks our gather + GEMM path on CPU, mmcv's kernel on a GPU it was built for."""
    if impl != 'auto':
        return impl
    return 'mmcv' if x.is_cuda and _mmcv_has_cuda() else 'torch'


def deform_conv(x: Tensor, offset: Optional[Tensor], mask: Optional[Tensor], weight: Tensor,
                bias: Optional[Tensor], stride, impl: str = 'auto') -> Tensor:
    """3x3 conv (padding 1) of x (N, C_in, H, W) with weight (C_out, C_in, 3, 3).

    With offsets (N, 18, H', W') and masks (N, 9, H', W'): modulated deformable, computed by our
    kernel or mmcv's (``resolve_dcn_impl``); without: a plain conv (offset 0, mask 1 is exactly that).
    """
    if offset is None:
        return F.conv2d(x, weight, bias, stride, 1)
    if torch.onnx.is_in_onnx_export():  # one node per conv, the runtime's op (deploy.symbolic)
        return torch.ops.mmdet_dyhead.modulated_deform_conv2d(
            x, offset, mask, weight, bias, list(_pair(stride)), [1, 1], [1, 1])
    if resolve_dcn_impl(impl, x) == 'mmcv':
        return mmcv_modulated_deform_conv2d(x.contiguous(), offset.contiguous(),
                                            mask.contiguous(), weight, bias, stride, 1, 1, 1, 1)
    return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, 1, 1)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class DeformConvNorm(nn.Module):
    """A 3x3 modulated deformable conv, then GroupNorm: (N, C_in, H, W) -> (N, C_out, H', W').

    ``conv`` is always an mmcv ``ModulatedDeformConv2d`` (its weights and state-dict keys);
    which kernel computes it is chosen per call (see ``resolve_dcn_impl``). Called without
    offsets it is a plain 3x3 conv with the same weights (offset 0 and mask 1 are exactly that).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 bias: bool = False, norm_cfg: Optional[dict] = None):
        super().__init__()
        self.conv = ModulatedDeformConv2d(in_channels, out_channels, 3, stride=stride,
                                          padding=1, bias=bias)
        # mmcv makes its weights with the legacy torch.Tensor(...), which ignores
        # torch.set_default_device / `with torch.device(...)`; the rest of the neck follows it
        self.conv.to(torch.get_default_device())
        self.norm = build_norm_layer(norm_cfg, out_channels)[1] if norm_cfg else nn.Identity()

    def forward(self, x: Tensor, offset: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                impl: str = 'auto') -> Tensor:
        return self.norm(deform_conv(x, offset, mask, self.conv.weight, self.conv.bias,
                                     self.conv.stride, impl))


def stacked_weights(a: DeformConvNorm, b: DeformConvNorm) -> Tuple[Tensor, Optional[Tensor]]:
    """The (2 C_out, C_in, 3, 3) weight (and bias) of ``a`` and ``b`` as one conv."""
    bias = None
    if a.conv.bias is not None:
        bias = torch.cat([a.conv.bias, b.conv.bias])
    return torch.cat([a.conv.weight, b.conv.weight]), bias


def tap_major(*weights: Tensor) -> Tensor:
    """(C_out_i, C_in, kh, kw) weights stacked along C_out, stored in (C_out, kh, kw, C_in) order:
    the shape is the usual one, the strides channels-last. Our C++ conv multiplies tap-major
    columns by this order, which is then a view instead of a copy per call (forward and
    backward); made here it is one copy, with the stacking."""
    return torch.cat([w.permute(0, 2, 3, 1) for w in weights]).permute(0, 3, 1, 2)


def split_norm(y: Tensor, a: DeformConvNorm, b: DeformConvNorm) -> Tuple[Tensor, Tensor]:
    """A stacked conv's (N, 2 C_out, H, W) output -> ``(a.norm(first half), b.norm(second))``."""
    if torch.onnx.is_in_onnx_export() and _stackable_norms(a.norm, b.norm):
        # export: one GroupNorm over the stacked channels, then the split. Its groups are the
        # two norms' groups side by side, so the statistics are the same; in the runtimes a
        # split of the normalised (planar) output is free, a split of the conv's output is not
        na, nb = a.norm, b.norm
        y = F.group_norm(y, na.num_groups + nb.num_groups, torch.cat([na.weight, nb.weight]),
                         torch.cat([na.bias, nb.bias]), na.eps)
        return tuple(y.split([a.conv.out_channels, b.conv.out_channels], dim=1))
    return norm_halves(*y.split([a.conv.out_channels, b.conv.out_channels], dim=1), a, b)


def norm_halves(ya: Tensor, yb: Tensor, a: DeformConvNorm,
                b: DeformConvNorm) -> Tuple[Tensor, Tensor]:
    """The two halves (views) of a stacked conv's output -> ``(a.norm(ya), b.norm(yb))``."""
    # each half as a dense tensor of its own: GroupNorm would otherwise copy a strided half while
    # the stacked output stays alive beside the copy
    fmt = torch.channels_last if ya.stride(1) == 1 else torch.contiguous_format
    ya, yb = (t.contiguous(memory_format=fmt) for t in (ya, yb))
    return a.norm(ya), b.norm(yb)


def _stackable_norms(na: nn.Module, nb: nn.Module) -> bool:
    """Two GroupNorms that one GroupNorm over their stacked channels equals."""
    return (isinstance(na, nn.GroupNorm) and isinstance(nb, nn.GroupNorm) and na.affine
            and nb.affine and na.eps == nb.eps
            and na.num_channels // na.num_groups == nb.num_channels // nb.num_groups)


def fused_deform_conv_norm(a: DeformConvNorm, b: DeformConvNorm, x: Tensor,
                           offset: Optional[Tensor], mask: Optional[Tensor],
                           impl: str = 'auto', stacked=None) -> Tuple[Tensor, Tensor]:
    """``(a(x, offset, mask), b(x, offset, mask))`` with one sampling of x: the two convs share
    their columns, so their weights are stacked into one (2 C_out) conv. ``stacked``:
    ``stacked_weights(a, b)`` when the caller reuses it over several inputs."""
    weight, bias = stacked if stacked is not None else stacked_weights(a, b)
    return split_norm(deform_conv(x, offset, mask, weight, bias, a.conv.stride, impl), a, b)


def stride2_size(h: int, w: int) -> Tuple[int, int]:
    """Output size of a 3x3, stride 2, padding 1 conv: what a level's finer neighbour gives."""
    return (h - 1) // 2 + 1, (w - 1) // 2 + 1


def resize_to(x: Tensor, size) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


def legacy_view(t: Tensor, size) -> Tensor:
    """What mmcv's kernel reads from a too-large offset/mask buffer: each sample's first c*h*w values.

    mmdet's DyHead and microsoft/DynamicHead pass the level's (N, c, H, W) offsets to the conv on
    the coarser (h, w) level; the kernel indexes them as (c, h, w), scrambling the positions.
    """
    n, c = t.shape[:2]
    h, w = size
    return t.flatten(1)[:, :c * h * w].view(n, c, h, w)
