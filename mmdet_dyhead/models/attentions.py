"""The three attentions of DyHead (Dai et al., CVPR 2021), one class each.

A DyHead block sees the pyramid as a level x space x channel tensor and applies

    scale-aware   pi_L : ScaleAwareAttention   (a weight per level, from its global average)
    spatial-aware pi_S : SpatialAwareAttention (deformable 3x3 convs over each level and its neighbours)
    task-aware    pi_C : TaskAwareAttention    (dynamic ReLU per channel)

Each has a plain fallback for the paper's ablation and the two-stage form:
``LevelMean`` for pi_L, ``SpatialAwareAttention(deformable=False)`` (plain 3x3 convs) for pi_S and
``nn.ReLU`` for pi_C.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import modulated_deform_conv2d_groups
from ..ops.deform_conv import split_groups
from . import options
from .deform_conv_norm import (
    DeformConvNorm,
    fused_deform_conv_norm,
    legacy_view,
    norm_halves,
    resize_to,
    resolve_dcn_impl,
    stacked_weights,
    stride2_size,
    tap_major,
)


def hard_sigmoid(x: Tensor, kind: str) -> Tensor:
    """'reference': relu6(x + 3) / 6 (both public codes); 'paper': clamp((x + 1) / 2, 0, 1)."""
    if kind == 'reference':
        return F.hardsigmoid(x)
    return ((x + 1) / 2).clamp(0, 1)


class _GlobalAverage(torch.autograd.Function):
    """x.mean((2, 3)) whose gradient is a broadcast view, not a map of x's size: autograd's own
    writes a contiguous map, and adding that to x's other gradients, which are channels-last
    (the deformable convs' layout), is a slow strided pass; a broadcast adds at full speed."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, grad):
        N, C, H, W = ctx.shape
        return (grad / (H * W)).view(N, C, 1, 1).expand(N, C, H, W)


def global_average(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C): each channel's mean over the map."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GlobalAverage.apply(x)
    return x.mean((2, 3))


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
        self.hsigmoid = options.hsigmoid('ScaleAwareAttention', hsigmoid)
        self.fc = nn.Conv2d(channels, 1, 1)

    def attention(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1, 1, 1) weight of this level."""
        return self.weight_of(global_average(x)).view(-1, 1, 1, 1)

    def weight_of(self, mean: Tensor) -> Tensor:
        """A level's global average (N, C) -> its weight (N, 1)."""
        # a 1x1 conv of a pooled map is a linear layer; F.linear skips oneDNN's conv set-up
        z = F.linear(mean, self.fc.weight.flatten(1), self.fc.bias)
        if self.hsigmoid == 'reference':
            z = F.relu(z)
        return hard_sigmoid(z, self.hsigmoid)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """L' maps (N, C, H, W) of one size -> their attention-weighted mean (N, C, H, W)."""
        # 1/L' folded into the (N, 1, 1, 1) weights: one pass over each map, no division pass
        out = None
        for feat in feats:
            weight = self.attention(feat) / len(feats)
            out = feat * weight if out is None else torch.addcmul(out, feat, weight)
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
        options.reduction('TaskAwareAttention', channels, reduction)
        self.channels = channels
        self.lambda_a = lambda_a
        self.init_a, self.init_b = tuple(init_a), tuple(init_b)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, 4 * channels, 1)

    def coefficients(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(N, C, H, W) -> a1, b1, a2, b2, each (N, C, 1, 1)."""
        return tuple(t[..., None, None] for t in self.coefficients_of(global_average(x)))

    def coefficients_of(self, mean: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The input's global average (N, C) -> a1, b1, a2, b2, each (N, C)."""
        z = F.relu(F.linear(mean, self.fc1.weight.flatten(1), self.fc1.bias))
        theta = F.hardsigmoid(F.linear(z, self.fc2.weight.flatten(1), self.fc2.bias)) - 0.5
        a1, b1, a2, b2 = theta.split(self.channels, dim=1)
        scale = 2.0 * self.lambda_a
        return (a1 * scale + self.init_a[0], b1 + self.init_b[0],
                a2 * scale + self.init_a[1], b2 + self.init_b[1])

    def forward(self, x: Tensor) -> Tensor:
        a1, b1, a2, b2 = self.coefficients(x)
        if torch.is_grad_enabled():
            return _DynamicReLU.apply(x, a1, b1, a2, b2)
        # no backward will come: nothing kept (the autograd form saves a sign map of x's size)
        return torch.maximum(torch.addcmul(b1, x, a1), torch.addcmul(b2, x, a2))


class SpatialAwareAttention(nn.Module):
    """pi_S: for each level l, 3x3 (deformable) convs over levels l-1, l and l+1, resized to level l.

    Offsets (dy, dx for 9 taps) and masks (sigmoid) come from one 3x3 conv on each level and are
    computed once per level. Each branch samples with offsets of its own output size:
      - same    (level l,   stride 1): offsets of level l;
      - finer   (level l-1, stride 2): offsets of level l (resampled if the sizes differ);
      - coarser (level l+1, stride 1, then bilinear upsampling): offsets of level l+1.
    ``legacy_offsets=True`` instead feeds the coarser branch level l's offsets as the reference
    codes do (see ``deform_conv_norm.legacy_view``), to reproduce their trained weights exactly.

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
        self.legacy_offsets = legacy_offsets
        self.dcn_impl = options.dcn_impl('SpatialAwareAttention', dcn_impl)
        self.zero_init_offset = zero_init_offset
        self.offset_conv = nn.Conv2d(in_channels, 27, 3, padding=1) if deformable else None
        self.same = DeformConvNorm(in_channels, out_channels, 1, bias, norm_cfg)
        self.finer = DeformConvNorm(in_channels, out_channels, 2, bias, norm_cfg)
        self.coarser = DeformConvNorm(in_channels, out_channels, 1, bias, norm_cfg)

    def offsets(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, C_in, H, W) -> offsets (N, 18, H, W) and masks (N, 9, H, W) in (0, 1)."""
        # a split, not two slices: each slice's backward pads its gradient to 27 channels
        offsets, masks = self.offset_conv(x).split([18, 9], dim=1)
        return offsets, masks.sigmoid()

    def forward(self, feats: Sequence[Tensor]) -> List[List[Tensor]]:
        """L maps (N, C_in, H_l, W_l) -> for each level, its 1 to 3 branches (N, C_out, H_l, W_l)."""
        offsets = self._offsets(feats)
        if self.batched(feats):
            same, coarser, finer = self._halves(*self._conv_outputs(feats, *offsets))
            return self._resized(feats, *self._normed(same, coarser, finer))
        return self._resized(feats, *self._per_level(feats, *offsets))

    @staticmethod
    def _resized(feats, same, coarser, finer) -> List[List[Tensor]]:
        num_levels = len(feats)
        out = []
        for level, x in enumerate(feats):
            size = x.shape[-2:]
            branches = [same[level]]
            if level > 0:
                branches.append(resize_to(finer[level], size))
            if level < num_levels - 1:
                branches.append(resize_to(coarser[level], size))
            out.append(branches)
        return out

    def batched(self, feats: Sequence[Tensor]) -> bool:
        """Whether our kernel takes each branch over all levels in one call (``raw`` needs it)."""
        return (self.offset_conv is not None and not self.legacy_offsets
                and resolve_dcn_impl(self.dcn_impl, feats[0]) == 'torch'
                and not torch.onnx.is_in_onnx_export())  # export: one node per conv

    def raw(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[List[tuple]]]:
        """What ``forward`` gives before its norms and resizes (only where ``batched(feats)``):
        the conv outputs as rows (P, C_s), and for each level its 1 to 3 branches in
        ``forward``'s order as (output index, first row, (N, H, W), first channel, norm).

        The outputs: level 0's same-level branch (C_out channels); the same-level branches of
        levels l >= 1 stacked with the coarser branches of levels l - 1 (2 C_out channels: one
        sampling, see above); the finer branches of levels l >= 1 (C_out channels). Returned
        whole, not as per-level views, so that a backward can write each one's gradient whole."""
        num_levels, cout = len(feats), self.same.conv.out_channels
        sources, where, fine_where = self._conv_groups(feats, *self._offsets(feats))
        levels = []
        for level in range(num_levels):
            branches = [(*where[level], 0, self.same.norm)]
            if level > 0:
                branches.append((*fine_where[level - 1], 0, self.finer.norm))
            if level < num_levels - 1:
                branches.append((*where[level + 1], cout, self.coarser.norm))
            levels.append(branches)
        return sources, levels

    def _offsets(self, feats):
        """Per level: offsets and masks, and the finer branch's (of its own size)."""
        num_levels = len(feats)
        if self.offset_conv is not None:
            offs, masks = map(list, zip(*(self.offsets(x) for x in feats)))
        else:
            offs, masks = [None] * num_levels, [None] * num_levels
        # finer[l]'s offsets are level l's, at the stride-2 size of level l-1 (resampled if the
        # levels are not exact halves)
        fine_offs, fine_masks = [None] * num_levels, [None] * num_levels
        for level in range(1, num_levels):
            finer_size = stride2_size(*feats[level - 1].shape[-2:])
            if offs[level] is not None and finer_size != tuple(feats[level].shape[-2:]):
                fine_offs[level] = resize_to(offs[level], finer_size)
                fine_masks[level] = resize_to(masks[level], finer_size)
            else:
                fine_offs[level], fine_masks[level] = offs[level], masks[level]
        return offs, masks, fine_offs, fine_masks

    # same[l]: the same-level branch of level l; coarser[l]: the coarser branch of level l, at
    # level l+1's size; finer[l]: the finer branch of level l, at the stride-2 size of level l-1.
    # With offsets of its own size, coarser[l] samples x_{l+1} exactly where same[l+1] does, so
    # both come from one sampling with stacked weights.

    def _conv_groups(self, feats, offs, masks, fine_offs, fine_masks):
        """Our kernel, each branch over all levels in one call (one GEMM over all positions): the
        output rows of level 0's same-level conv, of the stacked (2 C_out) same-level/coarser
        conv of levels >= 1 and of the finer convs, and where each input's rows lie in them
        (``modulated_deform_conv2d_groups``; ``where`` for the same/coarser inputs, ``fine_where``
        for the finer ones, indexing the one list of outputs)."""
        num_levels, cout = len(feats), self.same.conv.out_channels
        convs = [self.same.conv] + ([self.coarser.conv] if num_levels > 1 else [])
        bias = None if convs[0].bias is None else torch.cat([c.bias for c in convs])
        sources, where = modulated_deform_conv2d_groups(
            feats, offs, masks, tap_major(*(c.weight for c in convs)), bias, 1, 1, 1,
            [cout] + [2 * cout] * (num_levels - 1))
        fine_where = []
        if num_levels > 1:
            conv = self.finer.conv
            fine, fine_where = modulated_deform_conv2d_groups(
                feats[:-1], fine_offs[1:], fine_masks[1:], tap_major(conv.weight), conv.bias, 2,
                1, 1)
            fine_where = [(len(sources) + g, r0, shape) for g, r0, shape in fine_where]
            sources = sources + fine
        return sources, where, fine_where

    def _conv_outputs(self, feats, offs, masks, fine_offs, fine_masks):
        """``_conv_groups``' outputs as maps: ``stacked`` (level 0's same-level output, then per
        level l >= 1 its same-level and level l-1's coarser outputs as one (N, 2 C_out) map) and
        ``finer`` (None at level 0)."""
        sources, where, fine_where = self._conv_groups(feats, offs, masks, fine_offs, fine_masks)
        maps = split_groups(sources, where + fine_where)
        return maps[:len(feats)], [None] + maps[len(feats):]

    def _halves(self, stacked, finer):
        """``_conv_outputs``' as same, coarser, finer conv outputs before the norms: same[l] and
        coarser[l - 1] are the two halves of one stacked output (views of a split, not slices:
        a slice's backward pads its gradient to the whole)."""
        num_levels, cout = len(stacked), self.same.conv.out_channels
        same, coarser = [stacked[0]], [None] * num_levels
        for level in range(1, num_levels):
            half_same, coarser[level - 1] = stacked[level].split([cout, cout], dim=1)
            same.append(half_same)
        return same, coarser, list(finer)

    def _normed(self, same, coarser, finer):
        """``_halves``' outputs through their norms (each stacked output freed as soon as its two
        halves are normalised)."""
        num_levels = len(same)
        same[0] = self.same.norm(same[0])
        for level in range(1, num_levels):
            same[level], coarser[level - 1] = norm_halves(same[level], coarser[level - 1],
                                                          self.same, self.coarser)
        finer[1:] = [self.finer.norm(y) for y in finer[1:]]
        return same, coarser, finer

    def _per_level(self, feats, offs, masks, fine_offs, fine_masks):
        """One call per level and branch: mmcv's kernel, plain convs, or the legacy offsets."""
        impl, num_levels = self.dcn_impl, len(feats)
        same, coarser, finer = [None] * num_levels, [None] * num_levels, [None] * num_levels
        stacked = (stacked_weights(self.same, self.coarser)
                   if num_levels > 1 and not self.legacy_offsets else None)
        for level, x in enumerate(feats):
            if level > 0 and not self.legacy_offsets:
                same[level], coarser[level - 1] = fused_deform_conv_norm(
                    self.same, self.coarser, x, offs[level], masks[level], impl, stacked)
            else:
                same[level] = self.same(x, offs[level], masks[level], impl)
            if level > 0:
                finer[level] = self.finer(feats[level - 1], fine_offs[level], fine_masks[level],
                                          impl)
        if self.legacy_offsets:  # the references' reads: level l's offsets on the coarser map
            for level in range(num_levels - 1):
                size = feats[level + 1].shape[-2:]
                coarser[level] = self.coarser(feats[level + 1], legacy_view(offs[level], size),
                                              legacy_view(masks[level], size), impl)
        return same, coarser, finer
