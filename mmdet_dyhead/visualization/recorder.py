"""What each DynamicHead block's three attentions did in one forward pass, recorded with hooks
(the neck's forward is not changed), and where its deformable convs sampled.

    with AttentionRecorder(neck) as rec:
        detector(...)                      # or neck(feats)
    rec.blocks[b].scale[l]                 # {'finer'|'same'|'coarser': (N,) weight}
    sample_points(neck, rec, b, l, y, x)   # the 9 taps of each branch at (y, x) of level l

``tools/visualize_attention.py`` draws these (``visualization.draw``).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..models.attentions import ScaleAwareAttention, TaskAwareAttention
from ..models.deform_conv_norm import legacy_view, resize_to, stride2_size

BRANCHES = ('finer', 'same', 'coarser')  # level l-1, l, l+1


@dataclass
class BlockRecord:
    """One block's attentions for each level l (lists are indexed by level).

    sizes: (H_l, W_l). offsets: (N, 18, H_l, W_l) as (dy, dx) per tap, row-major over the 3x3
    kernel; masks: (N, 9, H_l, W_l). scale: {branch: (N,) weight}. coefficients: a1, b1, a2, b2,
    each (N, C). piece1_share: (N, C) share of positions where a1 * x + b1 wins (the ReLU-like
    piece). outputs: the block's (N, C, H_l, W_l) outputs.
    """
    sizes: List[Tuple[int, int]] = field(default_factory=list)
    offsets: List[Tensor] = field(default_factory=list)
    masks: List[Tensor] = field(default_factory=list)
    scale: List[Dict[str, Tensor]] = field(default_factory=list)
    coefficients: List[Tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)
    piece1_share: List[Tensor] = field(default_factory=list)
    outputs: List[Tensor] = field(default_factory=list)


def find_neck(model: nn.Module) -> nn.Module:
    """The (first) DynamicHead in ``model``; a ValueError names what was found otherwise."""
    for module in model.modules():
        if type(module).__name__ == 'DynamicHead':
            return module
    raise ValueError(f'{type(model).__name__} has no DynamicHead: visualize_attention needs a '
                     f'config whose neck contains dict(type="DynamicHead", ...)')


class AttentionRecorder:
    """Attach to a DynamicHead as a context manager; each forward of the neck while attached
    replaces ``blocks`` with that forward's records (one ``BlockRecord`` per block)."""

    def __init__(self, neck: nn.Module):
        self.neck = neck
        self.blocks: List[BlockRecord] = []
        self._handles = []

    def __enter__(self):
        self._handles.append(self.neck.register_forward_pre_hook(self._start))
        for block in self.neck.blocks:
            self._handles.append(block.register_forward_pre_hook(self._block_in))
            self._handles.append(block.register_forward_hook(self._block_out))
            if block.spatial.offset_conv is not None:  # called once per level, in level order
                self._handles.append(block.spatial.offset_conv.register_forward_hook(self._offsets))
            if isinstance(block.scale, ScaleAwareAttention):
                self._handles.append(block.scale.register_forward_pre_hook(self._scale))
            if isinstance(block.task, TaskAwareAttention):
                self._handles.append(block.task.register_forward_pre_hook(self._task))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def _current(self) -> BlockRecord:
        return self.blocks[-1]

    def _start(self, module, inputs):
        self.blocks = []

    def _block_in(self, module, inputs):
        self.blocks.append(BlockRecord(sizes=[tuple(x.shape[-2:]) for x in inputs[0]]))

    def _block_out(self, module, inputs, outputs):
        self._current.outputs = [y.detach() for y in outputs]

    def _offsets(self, module, inputs, out: Tensor):
        self._current.offsets.append(out[:, :18].detach())
        self._current.masks.append(out[:, 18:].sigmoid().detach())

    def _scale(self, module, inputs):
        branches = inputs[0]
        level = len(self._current.scale)
        names = ['same'] + (['finer'] if level > 0 else [])
        names += ['coarser'] * (len(branches) - len(names))
        with torch.no_grad():  # the same call the forward makes, so the same values
            self._current.scale.append(
                {name: module.attention(b).flatten() for name, b in zip(names, branches)})

    def _task(self, module, inputs):
        x = inputs[0]
        with torch.no_grad():
            a1, b1, a2, b2 = module.coefficients(x)
            share = (torch.addcmul(b1, x, a1) >= torch.addcmul(b2, x, a2)).float().mean((2, 3))
        rec = self._current
        rec.coefficients.append(tuple(c.flatten(1) for c in (a1, b1, a2, b2)))
        rec.piece1_share.append(share)


@dataclass
class Samples:
    """The 9 taps of one branch at one output position: ``level`` is the level sampled, ``yx``
    (9, 2) the tap positions in that level's pixels (tap k = row k // 3, column k % 3), ``mask``
    (9,) their modulation."""
    branch: str
    level: int
    yx: Tensor
    mask: Tensor


def _taps(offsets: Tensor, masks: Tensor, n: int, y: int, x: int, stride: int = 1) -> Tuple[Tensor, Tensor]:
    """Where a 3x3, padding 1 deformable conv of ``stride`` samples for output (y, x)."""
    k = torch.arange(9, device='cpu')  # the taps are returned on the CPU, for plotting
    grid = torch.stack([y * stride - 1 + k // 3, x * stride - 1 + k % 3], 1).to(offsets.dtype)
    return grid + offsets[n, :, y, x].view(9, 2).cpu(), masks[n, :, y, x].cpu()


def sample_points(neck: nn.Module, rec: List[BlockRecord], block: int, level: int, y: int,
                  x: int, n: int = 0) -> List[Samples]:
    """Where block ``block``'s spatial-aware attention sampled for position (y, x) of ``level``
    (sample ``n``): each branch's 9 taps and masks, computed as its deformable convs do.

    same: level l, stride 1, level l's offsets at (y, x). finer: level l-1, stride 2, level l's
    offsets (resampled to the stride-2 size of level l-1 where the sizes are not exact halves).
    coarser: level l+1, stride 1, at the level-(l+1) position that the bilinear upsampling
    (align_corners=True) weighs most, with level l+1's offsets, or with legacy_offsets the
    references' read of level l's.
    """
    r = rec[block]
    if not r.offsets:
        raise ValueError(f'block {block} has no spatial-aware attention (spatial_aware=False)')
    num_levels = len(r.sizes)
    out = [Samples('same', level, *_taps(r.offsets[level], r.masks[level], n, y, x))]
    if level > 0:
        size = stride2_size(*r.sizes[level - 1])
        offs, masks = resize_to(r.offsets[level], size), resize_to(r.masks[level], size)
        fy, fx = (_nearest(y, r.sizes[level][0], size[0]), _nearest(x, r.sizes[level][1], size[1]))
        out.append(Samples('finer', level - 1, *_taps(offs, masks, n, fy, fx, 2)))
    if level < num_levels - 1:
        size = r.sizes[level + 1]
        if neck.legacy_offsets:
            offs, masks = legacy_view(r.offsets[level], size), legacy_view(r.masks[level], size)
        else:
            offs, masks = r.offsets[level + 1], r.masks[level + 1]
        cy, cx = _nearest(y, r.sizes[level][0], size[0]), _nearest(x, r.sizes[level][1], size[1])
        out.append(Samples('coarser', level + 1, *_taps(offs, masks, n, cy, cx)))
    return out


def _nearest(p: int, size: int, src_size: int) -> int:
    """The source pixel nearest to output pixel p of an align_corners=True resize src -> size."""
    return p if size == src_size or size == 1 else round(p * (src_size - 1) / (size - 1))


def strongest_positions(rec: BlockRecord, count: int, levels: Optional[List[int]] = None,
                        n: int = 0, min_distance: int = 2) -> List[Tuple[int, int, int]]:
    """``count`` (level, y, x) where the block's output is strongest (channel L2 norm, relative to
    its level's mean), at least ``min_distance`` pixels apart within a level."""
    levels = range(len(rec.outputs)) if levels is None else levels
    cands = []
    for level in levels:
        norm = rec.outputs[level][n].norm(dim=0)
        norm = norm / norm.mean().clamp_min(1e-12)
        for idx in norm.flatten().argsort(descending=True)[:64].tolist():
            cands.append((float(norm.flatten()[idx]), level, *divmod(idx, norm.shape[1])))
    chosen = []
    for _, level, y, x in sorted(cands, reverse=True):
        if all(lv != level or max(abs(y - cy), abs(x - cx)) >= min_distance
               for lv, cy, cx in chosen):
            chosen.append((level, y, x))
        if len(chosen) == count:
            break
    return chosen
