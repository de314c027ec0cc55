"""The scale-aware and task-aware attentions' element-wise work, fused:

    scale_task(feats, weights, a1, b1, a2, b2) = max(a1 * s + b1, a2 * s + b2),
    s = sum_i weights[:, i] * feats[i]

feats: L' maps (N, C, H, W) (a level's branches); weights (N, L'); a1, b1, a2, b2 (N, C).
``scale_task_reference`` is the same in torch ops; on a CPU the C++ loops (csrc/scale_task.cpp)
make one pass over memory where the torch form makes 6 to 8 forward and about 12 backward
(``DynamicHeadBlock`` uses it when ``fusable`` says so). At ties (a1 s + b1 = a2 s + b2) the
gradient is split evenly, as torch.maximum's.
"""
from typing import List, Sequence

import torch
from torch import Tensor

from . import cpu_ext


def scale_task_reference(feats: Sequence[Tensor], weights: Tensor, a1: Tensor, b1: Tensor,
                         a2: Tensor, b2: Tensor) -> Tensor:
    """The torch form (any dtype, device, autograd, export)."""
    N, C = a1.shape
    s = sum(f * weights[:, i].view(N, 1, 1, 1) for i, f in enumerate(feats))
    a1, b1, a2, b2 = (t.view(N, C, 1, 1) for t in (a1, b1, a2, b2))
    return torch.maximum(a1 * s + b1, a2 * s + b2)


def _layout(feats: Sequence[Tensor]) -> torch.memory_format:
    cl = feats[0].is_contiguous(memory_format=torch.channels_last) and not feats[0].is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class _ScaleTask(torch.autograd.Function):

    @staticmethod
    def forward(ctx, weights, a1, b1, a2, b2, *feats):
        ext = cpu_ext.load()
        out, code = ext.scale_task_forward(list(feats), weights, a1, b1, a2, b2, True)
        ctx.save_for_backward(weights, a1, a2, code, *feats)
        return out

    @staticmethod
    def backward(ctx, grad):
        weights, a1, a2, code, *feats = ctx.saved_tensors
        grad = grad.contiguous(memory_format=_layout(feats))
        *gfeats, gw, ga1, gb1, ga2, gb2 = cpu_ext.load().scale_task_backward(
            grad, feats, weights, code, a1, a2)
        gfeats = [g if n else None for g, n in zip(gfeats, ctx.needs_input_grad[5:])]
        return (gw, ga1, gb1, ga2, gb2, *gfeats)


def fusable(feats: Sequence[Tensor]) -> bool:
    """Whether the C++ loops can take these maps: CPU, fp32/fp64, built, not being exported or
    traced (those see the torch form: one standard op per step)."""
    if not 1 <= len(feats) <= 3:  # a level has at most 3 branches; the loops take no more
        return False
    f0 = feats[0]
    return (f0.device.type == 'cpu' and f0.dtype in (torch.float32, torch.float64)
            and f0.dim() == 4 and all(f.shape == f0.shape and f.dtype == f0.dtype for f in feats)
            and cpu_ext.runs_here())


def scale_task(feats: Sequence[Tensor], weights: Tensor, a1: Tensor, b1: Tensor, a2: Tensor,
               b2: Tensor) -> Tensor:
    """The fused form where ``fusable(feats)``, else ``scale_task_reference``. Returns
    (N, C, H, W) in the maps' layout (channels-last stays channels-last)."""
    if not fusable(feats):
        return scale_task_reference(feats, weights, a1, b1, a2, b2)
    fmt = _layout(feats)
    feats: List[Tensor] = [f.contiguous(memory_format=fmt) for f in feats]
    dtype = feats[0].dtype
    weights, a1, b1, a2, b2 = (t.to(dtype).contiguous() for t in (weights, a1, b1, a2, b2))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (weights, a1, b1, a2, b2, *feats)):
        return _ScaleTask.apply(weights, a1, b1, a2, b2, *feats)
    # no backward will come: no sign codes kept
    return cpu_ext.load().scale_task_forward(feats, weights, a1, b1, a2, b2, False)[0]
