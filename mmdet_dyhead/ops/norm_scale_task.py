"""A block's GroupNorms, resizes, scale-aware sums and dynamic ReLUs in two passes, for eval.

For each level, with r_i its 1 to 3 raw branches (conv outputs, N, C, H_i, W_i), the block's
output is

    scale_task([resize(norm_i(r_i), size)], w, *coefficients_of(mean)),
    w_i = weight_of(mean_i) / L',  mean_i = global average of resize(norm_i(r_i), size),
    mean = sum_i w_i mean_i

GroupNorm with fixed statistics is a per-channel affine map and the bilinear resize
(align_corners) a weighted mean whose weights sum to 1, so one pass over each raw branch
(``channel_moments``: sums, sums of squares and resized sums per channel, in double) gives every
statistic and average, and a second (csrc/norm_scale_task.cpp) reads each raw branch once,
resizing it on the fly, and writes the level's output. No normalised, resized or summed map is
ever written. The small (N, C) math runs once for all branches of the block, not per branch.
There is no backward: ``DynamicHeadBlock`` takes this path only where autograd is off; training
keeps the norms and ``scale_task``.
"""
from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import cpu_ext

Branch = Tuple[Tensor, nn.GroupNorm]  # a raw conv output and the norm it is owed


def eval_fusable(levels: Sequence[Sequence[Branch]]) -> bool:
    """Whether the C++ passes take these levels' raw branches: autograd off, CPU, fp32/fp64, one
    N and C, channels contiguous, 1 to 3 branches per level, GroupNorms alike in groups and eps,
    not exported or traced, the extension built."""
    branches = [b for level in levels for b in level]
    if not branches or torch.is_grad_enabled() or not all(1 <= len(v) <= 3 for v in levels):
        return False
    r0, n0 = branches[0]
    return (r0.device.type == 'cpu' and r0.dtype in (torch.float32, torch.float64)
            and all(r.dim() == 4 and r.dtype == r0.dtype and r.shape[:2] == r0.shape[:2]
                    and r.stride(1) == 1 for r, _ in branches)
            and all(isinstance(n, nn.GroupNorm) and n.num_groups == n0.num_groups
                    and n.eps == n0.eps and n.affine == n0.affine for _, n in branches)
            and not torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and cpu_ext.load() is not None)


def channel_moments(maps: Sequence[Tensor], sizes) -> Tensor:
    """B maps (N, C, H_b, W_b), channels contiguous -> (B, N, 3, C) float64: per channel the sum,
    the sum of squares, and the sum of the map resized to sizes[b] (bilinear, align_corners)."""
    return cpu_ext.load().channel_moments(list(maps), [[int(h), int(w)] for h, w in sizes])


def group_norm_affine(moments: Tensor, counts: Tensor, num_groups: int, eps: float, weight,
                      bias) -> Tuple[Tensor, Tensor]:
    """GroupNorm of the maps whose ``channel_moments`` these are ((B, N, 3, C), each map of
    counts[b] pixels), as y = scale * x + shift per (map, sample, channel): scale, shift (B, N, C)
    float64. weight, bias: (B, C) or None. Biased variance, as GroupNorm's."""
    B, N, _, C = moments.shape
    per = C // num_groups
    sums = moments[:, :, :2].reshape(B, N, 2, num_groups, per).sum(4)
    sums = sums / (counts.view(B, 1, 1, 1) * per)
    mean, var = sums[:, :, 0], (sums[:, :, 1] - sums[:, :, 0] ** 2).clamp_min(0)
    scale = (var + eps).rsqrt().repeat_interleave(per, dim=2)  # (B, N, C)
    if weight is not None:
        scale = scale * weight.view(B, 1, C)
    shift = -mean.repeat_interleave(per, dim=2) * scale
    if bias is not None:
        shift = shift + bias.view(B, 1, C)
    return scale, shift


def norm_scale_task(levels: Sequence[Sequence[Branch]], sizes,
                    weight_of: Callable[[Tensor], Tensor],
                    coefficients_of: Callable[[Tensor], Tuple[Tensor, ...]]) -> List[Tensor]:
    """See the module's docstring. levels: per level, its 1 to 3 (raw map, GroupNorm) with maps
    of any strides with contiguous channels; sizes: per level (H, W); weight_of: averages
    (M, C) -> scale weights (M, 1); coefficients_of: averages (M, C) -> a1, b1, a2, b2 (M, C).
    Returns per level (N, C, H, W), channels-last."""
    ext = cpu_ext.load()
    branches = [b for level in levels for b in level]
    maps, norms = [r for r, _ in branches], [n for _, n in branches]
    level_of = torch.tensor([i for i, level in enumerate(levels) for _ in level])
    out_sizes = [sizes[i] for i in level_of.tolist()]
    dtype, (N, C), B, L = maps[0].dtype, maps[0].shape[:2], len(maps), len(levels)
    moments = channel_moments(maps, out_sizes)
    counts = torch.tensor([r.shape[2] * r.shape[3] for r in maps], dtype=torch.float64)
    level_counts = torch.tensor([h * w for h, w in out_sizes], dtype=torch.float64)
    n0 = norms[0]
    stack = (lambda ps: torch.stack(ps).double()) if n0.affine else (lambda ps: None)
    scale, shift = group_norm_affine(moments, counts, n0.num_groups, n0.eps,
                                     stack([n.weight for n in norms]),
                                     stack([n.bias for n in norms]))
    means = moments[:, :, 2] / level_counts.view(B, 1, 1) * scale + shift  # resized, normed
    per_level = torch.tensor([len(level) for level in levels], dtype=torch.float64)
    w = weight_of(means.reshape(B * N, C).to(dtype)).view(B, N).double()
    w = w / per_level[level_of].view(B, 1)
    # s = sum_i w_i (scale_i r_i + shift_i) = sum_i m_i r_i + const
    mean = means.new_zeros(L, N, C).index_add_(0, level_of, w[..., None] * means)
    const = means.new_zeros(L, N, C).index_add_(0, level_of, w[..., None] * shift)
    a1, b1, a2, b2 = (t.double().view(L, N, C) for t in coefficients_of(mean.view(L * N, C).to(dtype)))
    b1, b2 = b1 + a1 * const, b2 + a2 * const
    m = (w[..., None] * scale).to(dtype)
    a1, b1, a2, b2 = (t.to(dtype) for t in (a1, b1, a2, b2))
    outs, first = [], 0
    for i, level in enumerate(levels):
        last = first + len(level)
        outs.append(ext.norm_scale_task_forward(
            maps[first:last], m[first:last].transpose(0, 1).contiguous(), a1[i], b1[i], a2[i],
            b2[i], int(sizes[i][0]), int(sizes[i][1])))
        first = last
    return outs
