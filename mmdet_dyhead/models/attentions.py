"""The three attentions of DyHead (Dai et al., CVPR 2021), one class each.

A DyHead block sees the pyramid as a level x space x channel tensor and applies

    scale-aware   pi_L : ScaleAwareAttention   (a weight per level, from its global average)
    spatial-aware pi_S : SpatialAwareAttention (deformable 3x3 convs over each level and its neighbours)
    task-aware    pi_C : TaskAwareAttention    (dynamic ReLU per channel)

Each has a plain fallback for the paper's ablation and the two-stage form:
``LevelMean`` for pi_L, ``SpatialAwareAttention(deformable=False)`` (plain 3x3 convs) for pi_S and
``nn.ReLU`` for pi_C.
"""
import functools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.ops import ModulatedDeformConv2d
from mmcv.ops import modulated_deform_conv2d as mmcv_modulated_deform_conv2d
from torch import Tensor, nn

from ..ops import modulated_deform_conv2d, modulated_deform_conv2d_levels

HSIGMOIDS = ('reference', 'paper')
DCN_IMPLS = ('auto', 'torch', 'mmcv')


def hard_sigmoid(x: Tensor, kind: str) -> Tensor:
    """'reference': relu6(x + 3) / 6 (both public codes); 'paper': clamp((x + 1) / 2, 0, 1)."""
    if kind == 'reference':
        return F.hardsigmoid(x)
    return ((x + 1) / 2).clamp(0, 1)


class ScaleAwareAttention(nn.Module):
    """pi_L: weights each level's feature by sigma(f(global average)), then averages the levels.

    ``f`` is a 1x1 conv to one channel. With ``hsigmoid='reference'`` (default, as in
    microsoft/DynamicHead and mmdet) a ReLU precedes relu6(x+3)/6, so weights lie in [0.5, 1];
    with ``'paper'`` the weight is clamp((f+1)/2, 0, 1) in [0, 1], as written in the paper.

    Args:
        channels: C of the features.
        hsigmoid: 'reference' or 'paper'.
    """

    def __init__(self, channels: int, hsigmoid: str = 'reference'):
        super().__init__()
        if hsigmoid not in HSIGMOIDS:
            raise ValueError(f'hsigmoid must be one of {HSIGMOIDS}, got {hsigmoid!r}')
        self.hsigmoid = hsigmoid
        self.fc = nn.Conv2d(channels, 1, 1)

    def attention(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1, 1, 1) weight of this level."""
        # a 1x1 conv of a pooled map is a linear layer; F.linear skips oneDNN's conv set-up
        z = F.linear(x.mean((2, 3)), self.fc.weight.flatten(1), self.fc.bias)
        if self.hsigmoid == 'reference':
            z = F.relu(z)
        return hard_sigmoid(z, self.hsigmoid).view(-1, 1, 1, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """L' maps (N, C, H, W) of one size -> their attention-weighted mean (N, C, H, W)."""
        # 1/L' folded into the (N, 1, 1, 1) weights: one pass over each map, no division pass
        out = None
        for f in feats:
            a = self.attention(f) / len(feats)
            out = f * a if out is None else torch.addcmul(out, f, a)
        return out


class LevelMean(nn.Module):
    """Fallback for pi_L (``scale_aware=False``): the plain mean over levels."""

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return sum(feats) / len(feats)


class _DynamicReLU(torch.autograd.Function):
    """max(a1 * x + b1, a2 * x + b2) with (N, C, 1, 1) coefficients, in fewer passes than autograd
    makes of it: backward keeps x and sign(y1 - y2) (autograd keeps x, y1 and y2) and splits
    the gradient evenly at ties, as torch.maximum does."""

    @staticmethod
    def forward(ctx, x, a1, b1, a2, b2):
        y1, y2 = torch.addcmul(b1, x, a1), torch.addcmul(b2, x, a2)
        ctx.save_for_backward(x, torch.sign(y1 - y2), a1, a2)
        return torch.maximum(y1, y2)

    @staticmethod
    def backward(ctx, grad):
        x, sign, a1, a2 = ctx.saved_tensors
        g1 = torch.addcmul(grad, grad, sign).mul_(0.5)  # grad where y1 wins, half at ties
        g2 = grad - g1
        grad_x = torch.addcmul(g1 * a1, g2, a2) if ctx.needs_input_grad[0] else None
        dims = (2, 3)
        return (grad_x, (g1 * x).sum(dims, keepdim=True), g1.sum(dims, keepdim=True),
                (g2 * x).sum(dims, keepdim=True), g2.sum(dims, keepdim=True))


class TaskAwareAttention(nn.Module):
    """pi_C: dynamic ReLU, out = max(a1 * x + b1, a2 * x + b2) per sample and channel.

    The coefficients come from the global average: theta = hsigmoid(fc2(relu(fc1(avg)))) - 0.5
    in [-0.5, 0.5]; a_i = 2 * lambda_a * theta + init_a[i], b_i = theta + init_b[i]. The
    defaults (lambda_a 1, init_a [1, 0], init_b [0, 0]) make it start close to a ReLU.

    Args:
        channels: C.
        reduction: squeeze ratio of fc1 (C -> C // reduction).
    """

    def __init__(self, channels: int, reduction: int = 4, lambda_a: float = 1.0,
                 init_a: Tuple[float, float] = (1.0, 0.0),
                 init_b: Tuple[float, float] = (0.0, 0.0)):
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f'TaskAwareAttention needs channels >= reduction ({reduction}), '
                             f'got {channels}')
        self.channels = channels
        self.lambda_a = lambda_a
        self.init_a, self.init_b = tuple(init_a), tuple(init_b)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, 4 * channels, 1)

    def coefficients(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(N, C, H, W) -> a1, b1, a2, b2, each (N, C, 1, 1)."""
        z = F.relu(F.linear(x.mean((2, 3)), self.fc1.weight.flatten(1), self.fc1.bias))
        theta = F.hardsigmoid(F.linear(z, self.fc2.weight.flatten(1), self.fc2.bias)) - 0.5
        a1, b1, a2, b2 = theta[..., None, None].split(self.channels, dim=1)
        scale = 2.0 * self.lambda_a
        return (a1 * scale + self.init_a[0], b1 + self.init_b[0],
                a2 * scale + self.init_a[1], b2 + self.init_b[1])

    def forward(self, x: Tensor) -> Tensor:
        return _DynamicReLU.apply(x, *self.coefficients(x))


@functools.lru_cache(maxsize=None)
def _mmcv_has_cuda() -> bool:
    from mmcv.ops import get_compiling_cuda_version
    return get_compiling_cuda_version() not in ('not available', '')


def resolve_dcn_impl(impl: str, x: Tensor) -> str:
    """'auto' picks our gather + GEMM path on CPU, mmcv's kernel on a GPU it was built for.

    Under torch.jit.trace (the FLOP counter) every impl is mmcv's op: same FLOPs, and our
    multi-output function trips the tracer."""
    if torch.jit.is_tracing():
        return 'mmcv'
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
    if resolve_dcn_impl(impl, x) == 'mmcv':
        return mmcv_modulated_deform_conv2d(x.contiguous(), offset.contiguous(),
                                            mask.contiguous(), weight, bias, stride, 1, 1, 1, 1)
    return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, 1, 1)


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


def split_norm(y: Tensor, a: DeformConvNorm, b: DeformConvNorm) -> Tuple[Tensor, Tensor]:
    """A stacked conv's (N, 2 C_out, H, W) output -> ``(a.norm(first half), b.norm(second))``."""
    # each half as a dense tensor of its own: GroupNorm would otherwise copy a strided half while
    # the stacked output stays alive beside the copy
    fmt = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
    ya, yb = (t.contiguous(memory_format=fmt)
              for t in y.split([a.conv.out_channels, b.conv.out_channels], dim=1))
    del y
    return a.norm(ya), b.norm(yb)


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


def _resize(x: Tensor, size) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


def _legacy_view(t: Tensor, size) -> Tensor:
    """What mmcv's kernel reads from a too-large offset/mask buffer: each sample's first c*h*w values.

    mmdet's DyHead and microsoft/DynamicHead pass the level's (N, c, H, W) offsets to the conv on
    the coarser (h, w) level; the kernel indexes them as (c, h, w), scrambling the positions.
    """
    n, c = t.shape[:2]
    h, w = size
    return t.flatten(1)[:, :c * h * w].view(n, c, h, w)


class SpatialAwareAttention(nn.Module):
    """pi_S: for each level l, 3x3 (deformable) convs over levels l-1, l and l+1, resized to level l.

    Offsets (dy, dx for 9 taps) and masks (sigmoid) come from one 3x3 conv on each level and are
    computed once per level. Each branch samples with offsets of its own output size:
      - same    (level l,   stride 1): offsets of level l;
      - finer   (level l-1, stride 2): offsets of level l (resampled if the sizes differ);
      - coarser (level l+1, stride 1, then bilinear upsampling): offsets of level l+1.
    ``legacy_offsets=True`` instead feeds the coarser branch level l's offsets as the reference
    codes do (see ``_legacy_view``), to reproduce their trained weights exactly.

    Since the coarser branch of level l then samples level l+1 exactly where level l+1's own
    same-level branch does, the two are computed as one conv with stacked weights (one sampling).

    Args:
        in_channels, out_channels: C_in of the inputs, C_out of the outputs.
        deformable: False gives plain 3x3 convs (no offset conv): the ``spatial_aware=False`` fallback.
        bias: a bias in the deformable convs (microsoft/DynamicHead: yes; mmdet: no).
        norm_cfg: norm after each conv (GroupNorm with 16 groups in both references).
        zero_init_offset: start the offset conv at zero (mmdet) or at PyTorch's default (official).
        legacy_offsets: reproduce the references' coarser-branch offsets.
        dcn_impl: 'auto', 'torch' (gather + GEMM) or 'mmcv' (mmcv's kernel).
    """

    def __init__(self, in_channels: int, out_channels: int, deformable: bool = True,
                 bias: bool = False, norm_cfg: Optional[dict] = None,
                 zero_init_offset: bool = True, legacy_offsets: bool = False,
                 dcn_impl: str = 'auto'):
        super().__init__()
        if dcn_impl not in DCN_IMPLS:
            raise ValueError(f'dcn_impl must be one of {DCN_IMPLS}, got {dcn_impl!r}')
        self.legacy_offsets = legacy_offsets
        self.dcn_impl = dcn_impl
        self.zero_init_offset = zero_init_offset
        self.offset_conv = nn.Conv2d(in_channels, 27, 3, padding=1) if deformable else None
        self.same = DeformConvNorm(in_channels, out_channels, 1, bias, norm_cfg)
        self.finer = DeformConvNorm(in_channels, out_channels, 2, bias, norm_cfg)
        self.coarser = DeformConvNorm(in_channels, out_channels, 1, bias, norm_cfg)

    def offsets(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, C_in, H, W) -> offsets (N, 18, H, W) and masks (N, 9, H, W) in (0, 1)."""
        om = self.offset_conv(x)
        return om[:, :18], om[:, 18:].sigmoid()

    def forward(self, feats: Sequence[Tensor]) -> List[List[Tensor]]:
        """L maps (N, C_in, H_l, W_l) -> for each level, its 1 to 3 branches (N, C_out, H_l, W_l)."""
        L = len(feats)
        om = ([self.offsets(x) for x in feats] if self.offset_conv is not None
              else [(None, None)] * L)
        offs, masks = [o for o, _ in om], [m for _, m in om]
        # finer[l]'s offsets are level l's, at the stride-2 size of level l-1 (resampled if the
        # levels are not exact halves)
        fine_offs, fine_masks = [None] * L, [None] * L
        for l in range(1, L):
            fsize = stride2_size(*feats[l - 1].shape[-2:])
            if offs[l] is not None and fsize != tuple(feats[l].shape[-2:]):
                fine_offs[l], fine_masks[l] = _resize(offs[l], fsize), _resize(masks[l], fsize)
            else:
                fine_offs[l], fine_masks[l] = offs[l], masks[l]
        if (self.offset_conv is not None and not self.legacy_offsets
                and resolve_dcn_impl(self.dcn_impl, feats[0]) == 'torch'):
            same, up, finer = self._levels_batched(feats, offs, masks, fine_offs, fine_masks)
        else:
            same, up, finer = self._per_level(feats, offs, masks, fine_offs, fine_masks)
        out = []
        for l, x in enumerate(feats):
            size = x.shape[-2:]
            branches = [same[l]]
            if l > 0:
                branches.append(_resize(finer[l], size))
            if l < L - 1:
                branches.append(_resize(up[l], size))
            out.append(branches)
        return out

    # same[l]: the same-level branch of level l; up[l]: the coarser branch of level l, at level
    # l+1's size; finer[l]: the finer branch of level l, at the stride-2 size of level l-1. With
    # offsets of its own size, up[l] samples x_{l+1} exactly where same[l+1] does, so both come
    # from one sampling with stacked weights.

    def _levels_batched(self, feats, offs, masks, fine_offs, fine_masks):
        """Our kernel, each branch over all levels in one call (one GEMM over all positions)."""
        L, cout = len(feats), self.same.conv.out_channels
        weight, bias = (stacked_weights(self.same, self.coarser) if L > 1
                        else (self.same.conv.weight, self.same.conv.bias))
        ys = modulated_deform_conv2d_levels(feats, offs, masks, weight, bias, 1, 1, 1,
                                            [cout] + [2 * cout] * (L - 1))
        same, up, finer = [self.same.norm(ys[0])] + [None] * (L - 1), [None] * L, [None] * L
        for l in range(1, L):
            same[l], up[l - 1] = split_norm(ys[l], self.same, self.coarser)
        ys[:] = []
        if L > 1:
            conv = self.finer.conv
            fy = modulated_deform_conv2d_levels(feats[:-1], fine_offs[1:], fine_masks[1:],
                                                conv.weight, conv.bias, 2, 1, 1)
            finer[1:] = [self.finer.norm(y) for y in fy]
        return same, up, finer

    def _per_level(self, feats, offs, masks, fine_offs, fine_masks):
        """One call per level and branch: mmcv's kernel, plain convs, or the legacy offsets."""
        impl, L = self.dcn_impl, len(feats)
        same, up, finer = [None] * L, [None] * L, [None] * L
        stacked = (stacked_weights(self.same, self.coarser)
                   if L > 1 and not self.legacy_offsets else None)
        for l, x in enumerate(feats):
            if l > 0 and not self.legacy_offsets:
                same[l], up[l - 1] = fused_deform_conv_norm(self.same, self.coarser, x, offs[l],
                                                            masks[l], impl, stacked)
            else:
                same[l] = self.same(x, offs[l], masks[l], impl)
            if l > 0:
                finer[l] = self.finer(feats[l - 1], fine_offs[l], fine_masks[l], impl)
        if self.legacy_offsets:  # the references' reads: level l's offsets on the coarser map
            for l in range(L - 1):
                size = feats[l + 1].shape[-2:]
                up[l] = self.coarser(feats[l + 1], _legacy_view(offs[l], size),
                                     _legacy_view(masks[l], size), impl)
        return same, up, finer
