"""A block's GroupNorms, resizes, scale-aware sums and dynamic ReLUs in few passes over memory.

For each level, with r_i its 1 to 3 raw branches (conv outputs, N, C, H_i, W_i), the block's
output is

    scale_task([resize(norm_i(r_i), size)], w, *coefficients_of(mean)),
    w_i = weight_of(mean_i) / L',  mean_i = global average of resize(norm_i(r_i), size),
    mean = sum_i w_i mean_i

GroupNorm with fixed statistics is a per-channel affine map and the bilinear resize
(align_corners) a weighted mean whose weights sum to 1, so one pass over each raw branch
(``channel_moments``: sums, sums of squares and resized sums per channel, in double) gives every
statistic and average; the rest is small (N, C) math, once for all branches of the block
(``_factors`` as torch ops; for DynamicHead's own attentions ``_NativeSmallMath``, loops in
csrc/small_math.cpp), after which one pass (csrc/norm_scale_task.cpp) reads each raw branch,
resizing it on the fly, and writes the level's output: out = max(a1 * s + b1', a2 * s + b2'),
s = sum_i m_i r_i. No normalised, resized or summed map is ever written.

The backward is two passes per level: the first sums what the small math's gradient needs (the
gradients of m_i and of the coefficients), the small math's backward takes those to the moments
and parameters (written out in csrc/small_math.cpp, or autograd through the graph the forward
recorded), and the second writes each branch's gradient (the output's, through the factors,
plus the moments' share: d sum -> constant, d sum of squares -> 2 r). A resized branch's
gradient is written at the output's size and resized back by one more pass, which adds its
moments' share.
"""
import contextlib
from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import cpu_ext
from .deform_conv import acc_dtype, group_view

# a level's branch: the conv output rows (P, C_s) it lies in (an index into the sources), its
# first row there, its (N, H, W), its first channel, and its norm
Branch = Tuple[int, int, Tuple[int, int, int], int, nn.GroupNorm]


def norms_fusable(norms: Sequence[nn.Module]) -> bool:
    """Whether the folded passes can stand in for these norms: GroupNorms alike in groups, eps
    and affine (the statistics' math is shared by all branches)."""
    n0 = norms[0]
    return all(isinstance(n, nn.GroupNorm) and isinstance(n0, nn.GroupNorm)
               and n.num_groups == n0.num_groups and n.eps == n0.eps and n.affine == n0.affine
               for n in norms)


def fusable(sources: Sequence[Tensor], levels: Sequence[Sequence[Branch]]) -> bool:
    """Whether the C++ passes take these conv outputs and branches: CPU, fp32/fp64/bf16 rows of
    one dtype (bf16 computes in fp32 and returns bf16), 1 to 3 branches per level,
    ``norms_fusable`` norms, not exported or traced, the extension built."""
    norms = [b[-1] for level in levels for b in level]
    if not norms or not all(1 <= len(v) <= 3 for v in levels):
        return False
    s0 = sources[0]
    return (s0.device.type == 'cpu' and s0.dtype in (torch.float32, torch.float64, torch.bfloat16)
            and all(s.dim() == 2 and s.dtype == s0.dtype and s.is_contiguous() for s in sources)
            and norms_fusable(norms) and cpu_ext.runs_here())


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


class _Plan:
    """Where each branch lies and what it is resized to; what the small math needs."""

    def __init__(self, sources, levels, sizes, weight_of, coefficients_of, attentions):
        self.levels, self.sizes = levels, [(int(h), int(w)) for h, w in sizes]
        self.weight_of, self.coefficients_of = weight_of, coefficients_of
        self.attentions = attentions
        self.C = levels[0][0][-1].num_channels
        self.branches = [b for level in levels for b in level]
        self.norms = [b[-1] for b in self.branches]
        self.level_of = torch.tensor([i for i, level in enumerate(levels) for _ in level])
        self.out_sizes = [self.sizes[i] for i in self.level_of.tolist()]
        shapes = [b[2][1:] for b in self.branches]
        # the backward writes each source's gradient through the branches: they must cover it
        assert sum(b[2][0] * h * w * self.C for b, (h, w) in zip(self.branches, shapes)) == \
            sum(s.numel() for s in sources), 'the branches must cover the conv outputs once'

        self.resized = [tuple(s) != o for s, o in zip(shapes, self.out_sizes)]
        self.count_list = [s[0] * s[1] for s in shapes]
        self.level_count_list = [h * w for h, w in self.out_sizes]
        self.counts = torch.tensor(self.count_list, dtype=torch.float64)
        self.level_counts = torch.tensor(self.level_count_list, dtype=torch.float64)
        self.per_level = torch.tensor([len(level) for level in levels], dtype=torch.float64)

    def native(self, dtype) -> bool:
        """Whether the small math runs in C++ (``_NativeSmallMath``): DynamicHead's own
        attentions, their parameters in the arithmetic's type, no autocast (which would run
        their linear layers in bf16)."""
        if self.attentions is None or torch.is_autocast_enabled('cpu'):
            return False
        return all(p.dtype == dtype for m in (*self.attentions, *self.norms)
                   for p in m.parameters())

    def maps(self, sources) -> List[Tensor]:
        """Each branch's (N, C, H, W) view of its rows: channels-last strides, maybe strided."""
        return [group_view(sources[j], r0, shape, (c0, self.C))
                for j, r0, shape, c0, _ in self.branches]

    def spans(self):
        first = 0
        for level in self.levels:
            yield slice(first, first + len(level))
            first += len(level)


def _factors(plan: _Plan, moments: Tensor, dtype) -> Tuple[Tensor, ...]:
    """The small math: moments (B, N, 3, C) -> m (B, N, C), a1, b1', a2, b2' (L, N, C), in dtype
    (differentiable: for a backward, the forward records its graph)."""
    B, N, _, C = moments.shape
    L, n0 = len(plan.levels), plan.norms[0]
    stack = (lambda ps: torch.stack(ps).double()) if n0.affine else (lambda ps: None)
    scale, shift = group_norm_affine(moments, plan.counts, n0.num_groups, n0.eps,
                                     stack([n.weight for n in plan.norms]),
                                     stack([n.bias for n in plan.norms]))
    means = moments[:, :, 2] / plan.level_counts.view(B, 1, 1) * scale + shift  # resized, normed
    w = plan.weight_of(means.reshape(B * N, C).to(dtype)).view(B, N).double()
    w = w / plan.per_level[plan.level_of].view(B, 1)
    # s = sum_i w_i (scale_i r_i + shift_i) = sum_i m_i r_i + const
    mean = means.new_zeros(L, N, C).index_add(0, plan.level_of, w[..., None] * means)
    const = means.new_zeros(L, N, C).index_add(0, plan.level_of, w[..., None] * shift)
    a1, b1, a2, b2 = (t.double().view(L, N, C)
                      for t in plan.coefficients_of(mean.view(L * N, C).to(dtype)))
    return tuple(t.to(dtype) for t in (w[..., None] * scale, a1, b1 + a1 * const, a2,
                                       b2 + a2 * const))


class _NativeSmallMath:
    """The small math in C++ (csrc/small_math.cpp) for DynamicHead's own attentions: ``_factors``
    with ``ScaleAwareAttention.weight_of`` and ``TaskAwareAttention.coefficients_of``, and its
    backward written out, as loops over the (N, C) arrays: one call per direction where the torch
    ops dispatched ~100 each way (about 2.5 ms per block)."""

    def __init__(self, plan: _Plan, moments: Tensor):
        scale, task = plan.attentions
        n0 = plan.norms[0]
        unique = list({id(n): n for n in plan.norms}.values())
        self.norm_params = [p for n in unique for p in (n.weight, n.bias)] if n0.affine else []
        self.norm_of = torch.tensor([[u is n for u in unique].index(True) for n in plan.norms])
        self.attention_params = [scale.fc.weight, scale.fc.bias, task.fc1.weight, task.fc1.bias,
                                 task.fc2.weight, task.fc2.bias]
        self.plan, self.moments, self.paper = plan, moments, scale.hsigmoid == 'paper'
        self.lambda_a = task.lambda_a
        self.levels, self.saved = cpu_ext.load().small_math_forward(
            moments, plan.count_list, plan.level_count_list, plan.level_of, len(plan.levels),
            n0.num_groups, n0.eps, self.norm_params, self.norm_of, self.attention_params,
            self.paper, task.lambda_a, [*task.init_a, *task.init_b])

    def backward(self, d_m: Tensor, d_coef: Tensor):
        """-> per level k1, k2 (N, L', C), per resized branch k1, k2 (N, C), and {id(param):
        gradient} for the norms' and attentions' parameters."""
        plan = self.plan
        k_levels, k_resized, grads = cpu_ext.load().small_math_backward(
            self.saved, self.moments, d_m, d_coef, plan.count_list, plan.level_count_list,
            plan.resized, plan.level_of, plan.norms[0].num_groups, self.norm_params,
            self.norm_of, self.attention_params, self.paper, self.lambda_a)
        params = self.norm_params + self.attention_params
        return k_levels, k_resized, {id(p): g for p, g in zip(params, grads)}


def _kept_as_they_are():
    """Identity saved-tensor hooks where other hooks are active (a checkpoint's), so that what is
    saved inside is kept as it is; a null context where none are (hooks cost a Python call per
    saved tensor)."""
    top = getattr(torch._C._autograd, '_top_saved_tensors_default_hooks', None)
    if top is not None and top(False) is None:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)


def _forward(plan: _Plan, sources, with_code: bool):
    """-> the levels' outputs, their sign codes (with_code), the small math (with_code: what its
    backward needs) and each level's (m, a1, a2) as the passes take them."""
    ext = cpu_ext.load()
    maps = plan.maps(sources)
    moments = channel_moments(maps, plan.out_sizes)
    dtype = acc_dtype(maps[0].dtype)
    if plan.native(dtype):
        small = _NativeSmallMath(plan, moments)
        level_factors = small.levels
    else:
        # for a backward, the small math's graph is recorded now rather than the math run again
        # then: its ~85 tiny ops cost their dispatch, not their arithmetic. Its few (N, C)
        # tensors are kept as they are, past any saved-tensor hooks: a non-reentrant
        # checkpoint's (with_cp) would run the whole block once more for the backward's own
        # autograd.grad
        kept = _kept_as_they_are() if with_code else contextlib.nullcontext()
        with torch.set_grad_enabled(with_code), kept:
            leaf = moments.requires_grad_(with_code)
            small = (leaf, _factors(plan, leaf, dtype))
        m, a1, b1, a2, b2 = (t.detach() for t in small[1])
        level_factors = [(m[span].transpose(0, 1).contiguous(), a1[i].contiguous(),
                          b1[i].contiguous(), a2[i].contiguous(), b2[i].contiguous())
                         for i, span in enumerate(plan.spans())]
    outs, codes, factors = [], [], []
    for i, span in enumerate(plan.spans()):
        h, w = plan.sizes[i]
        m_i, a1_i, b1_i, a2_i, b2_i = level_factors[i]
        res = ext.norm_scale_task_forward(maps[span], m_i, a1_i, b1_i, a2_i, b2_i, h, w,
                                          with_code)
        outs.append(res[0])
        codes.extend(res[1:])
        factors.extend((m_i, a1_i, a2_i))  # what the backward's passes take
    return outs, codes, small, factors


def _moment_shares(plan: _Plan, d_moments: Tensor, dtype):
    """The moments' gradients (B, N, 3, C) -> what each branch's gradient gets from them, k1 +
    k2 * r: per level k1, k2 (N, L', C), and per resized branch k1, k2 (N, C) (its resized
    sum's share is taken at the output's size, the rest after the resize back)."""
    resized = torch.tensor(plan.resized).view(-1, 1, 1)
    d_sum, d_sum_sq, d_resized = d_moments.unbind(2)
    k1 = torch.where(resized, d_resized, d_sum + d_resized).to(dtype)
    k2 = (2 * d_sum_sq).to(dtype)
    k_levels = [k[span].transpose(0, 1).contiguous() for span in plan.spans() for k in (k1, k2)]
    k_resized = [k for b, r in enumerate(plan.resized) if r
                 for k in (d_sum[b].to(dtype).contiguous(), k2[b])]
    return k_levels, k_resized


class _NormScaleTask(torch.autograd.Function):

    @staticmethod
    def forward(ctx, plan, num_sources, *tensors):
        sources = tensors[:num_sources]
        outs, codes, ctx.small, factors = _forward(plan, sources, with_code=True)
        ctx.plan, ctx.num_sources = plan, num_sources
        ctx.params = tensors[num_sources:]
        ctx.save_for_backward(*sources, *codes, *factors)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        plan, ext = ctx.plan, cpu_ext.load()
        saved, L = ctx.saved_tensors, len(plan.levels)
        sources = saved[:ctx.num_sources]
        codes = saved[ctx.num_sources:len(saved) - 3 * L]
        # per level, both passes' (N, L', C) factors and (N, C) slopes, as the forward took them
        factors = [saved[len(saved) - 3 * (L - i):][:3] for i in range(L)]
        maps = plan.maps(sources)
        dtype = factors[0][0].dtype
        cl = torch.channels_last
        grads = [torch.zeros_like(c, dtype=maps[0].dtype) if g is None
                 else g.contiguous(memory_format=cl) for g, c in zip(grads, codes)]
        dm, dcoef = [], []
        for i, span in enumerate(plan.spans()):
            d_m, d_c = ext.norm_scale_task_backward_sums(grads[i], codes[i], maps[span],
                                                         *factors[i])
            dm.append(d_m.transpose(0, 1))
            dcoef.append(d_c)
        dcoef = torch.stack(dcoef)  # (L, N, 4, C)
        small, ctx.small = ctx.small, None
        if isinstance(small, _NativeSmallMath):
            k_levels, k_resized, by_id = small.backward(torch.cat(dm), dcoef)
            param_grads = [by_id.get(id(p)) if p.requires_grad else None for p in ctx.params]
        else:
            params = [p for p in ctx.params if p.requires_grad]
            leaf, out = small
            d_small = [torch.cat(dm).to(dtype)] + [dcoef[:, :, k].to(dtype) for k in range(4)]
            d_moments, *d_params = torch.autograd.grad(out, [leaf] + params, d_small,
                                                       allow_unused=True)
            k_levels, k_resized = _moment_shares(plan, d_moments, dtype)
            d_params = iter(d_params)
            param_grads = [next(d_params) if p.requires_grad else None for p in ctx.params]
        source_grads = [torch.empty_like(s) for s in sources]
        dst_maps = plan.maps(source_grads)
        k_resized = iter(k_resized)
        for i, span in enumerate(plan.spans()):
            dst, fixups = [], []
            for b in range(span.start, span.stop):
                view = dst_maps[b]
                if plan.resized[b]:
                    dst.append(torch.empty_like(grads[i], dtype=dtype))
                    fixups.append((b, view, dst[-1]))
                else:
                    dst.append(view)
            ext.norm_scale_task_backward_maps(grads[i], codes[i], maps[span], *factors[i],
                                              *k_levels[2 * i:2 * i + 2], dst)
            for b, view, fine in fixups:  # back through the resize, plus the moments' share
                ext.norm_scale_task_backward_resized(fine, maps[b], next(k_resized),
                                                     next(k_resized), view)
        return (None, None, *source_grads, *param_grads)


def norm_scale_task(sources: Sequence[Tensor], levels: Sequence[Sequence[Branch]], sizes,
                    weight_of: Callable[[Tensor], Tensor],
                    coefficients_of: Callable[[Tensor], Tuple[Tensor, ...]],
                    params: Sequence[Tensor] = (), attentions=None) -> List[Tensor]:
    """See the module's docstring.

    Args:
        sources: the conv outputs as contiguous rows (P, C_s), as
            ``modulated_deform_conv2d_groups`` gives them.
        levels: per level, its 1 to 3 branches (source index, first row, (N, H, W), first
            channel, GroupNorm); together they must cover the sources once.
        sizes: per level, its (H, W).
        weight_of: averages (M, C) -> scale weights (M, 1).
        coefficients_of: averages (M, C) -> a1, b1, a2, b2 (M, C).
        params: every parameter the norms, weight_of and coefficients_of use (for their
            gradients).
        attentions: None, or the (ScaleAwareAttention, TaskAwareAttention) whose ``weight_of``
            and ``coefficients_of`` these are, exactly those classes: then the small math runs
            in C++ (csrc/small_math.cpp, which writes out their math) where the parameters are
            in the arithmetic's type and autocast is off.
    Returns:
        per level (N, C, H, W), channels-last.
    """
    plan = _Plan(sources, levels, sizes, weight_of, coefficients_of, attentions)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*sources, *params)):
        return list(_NormScaleTask.apply(plan, len(sources), *sources, *params))
    return _forward(plan, sources, with_code=False)[0]
