"""DynamicHeadBlock (pi_C(pi_S(pi_L(F)))) and the DynamicHead neck registered in mmdet's MODELS."""
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules import module as torch_module
from torch.utils.checkpoint import checkpoint

from ..ops import cpu_ext
from ..ops.layout import to_channels_last, to_contiguous
from ..ops.norm_scale_task import norm_scale_task, norms_fusable
from ..ops.scale_task import fusable, scale_task
from . import options
from .attentions import (
    LevelMean,
    ScaleAwareAttention,
    SpatialAwareAttention,
    TaskAwareAttention,
    global_average,
)
from .deform_conv_norm import stride2_size

DEFAULT_NORM = dict(type='GN', num_groups=16, requires_grad=True)


class DynamicHeadBlock(nn.Module):
    """One DyHead block: L maps (N, C_in, H_l, W_l) -> L maps (N, C_out, H_l, W_l).

    Per level: spatial-aware branches over the level and its neighbours, fused by scale-aware
    attention, then task-aware attention. Each attention can be switched to its plain fallback;
    see ``DynamicHead`` for the arguments. On a CPU the branches' GroupNorms and resizes fold
    into the scale/task pass (``ops.norm_scale_task``): same outputs and gradients, fewer passes.
    """

    def __init__(self, in_channels: int, out_channels: int, scale_aware: bool = True,
                 spatial_aware: bool = True, task_aware: bool = True, hsigmoid: str = 'reference',
                 spatial_bias: bool = False, norm_cfg: Optional[dict] = DEFAULT_NORM,
                 zero_init_offset: bool = True, legacy_offsets: bool = False,
                 dcn_impl: str = 'auto'):
        super().__init__()
        self.spatial = SpatialAwareAttention(in_channels, out_channels, spatial_aware,
                                             spatial_bias, norm_cfg, zero_init_offset,
                                             legacy_offsets, dcn_impl)
        self.scale = ScaleAwareAttention(out_channels, hsigmoid) if scale_aware else LevelMean()
        self.task = TaskAwareAttention(out_channels) if task_aware else nn.ReLU()
        self.init_weights()

    def init_weights(self):
        # As mmdet's DyHead: every plain conv N(0, 0.01); offsets start at zero (no deformation).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.spatial.offset_conv is not None and self.spatial.zero_init_offset:
            nn.init.zeros_(self.spatial.offset_conv.weight)
            nn.init.zeros_(self.spatial.offset_conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        if self._foldable(feats):
            sources, levels = self.spatial.raw(feats)
            # DynamicHead's own attentions (not a subclass): their math is in the C++ small math
            own = type(self.scale) is ScaleAwareAttention and type(self.task) is TaskAwareAttention
            return norm_scale_task(sources, levels, [f.shape[-2:] for f in feats],
                                   self.scale.weight_of, self.task.coefficients_of,
                                   self._fold_params(), (self.scale, self.task) if own else None)
        return [self.scale_task(branches) for branches in self.spatial(feats)]

    def _foldable(self, feats: Sequence[Tensor]) -> bool:
        """Whether the norms, resizes, pi_L and pi_C fold into few passes over the raw conv outputs
        (``ops.norm_scale_task``): everything its C++ passes need, known before the convs run,
        and nothing hooks the modules it skips."""
        spatial = self.spatial
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # they see the plain ops
            return False
        dtype = feats[0].dtype
        if torch.is_autocast_enabled('cpu'):  # bf16 convs: the passes read bf16, compute fp32
            ok = (dtype in (torch.float32, torch.bfloat16)  # a folded block's output is bf16
                  and torch.get_autocast_dtype('cpu') == torch.bfloat16)
        else:
            ok = dtype in (torch.float32, torch.float64)
        if feats[0].device.type != 'cpu' or not ok or cpu_ext.load() is None:
            return False
        return (isinstance(self.scale, ScaleAwareAttention)
                and norms_fusable((spatial.same.norm, spatial.finer.norm, spatial.coarser.norm))
                and isinstance(self.task, TaskAwareAttention) and spatial.batched(feats)
                and not any(_hooked(m) for m in (self.scale, self.task, spatial.same.norm,
                                                 spatial.finer.norm, spatial.coarser.norm)))

    def _fold_params(self) -> List[Tensor]:
        """The parameters ``norm_scale_task`` uses besides the maps (for their gradients)."""
        norms = (self.spatial.same.norm, self.spatial.finer.norm, self.spatial.coarser.norm)
        return [p for m in (*norms, self.scale, self.task) for p in m.parameters()]

    def scale_task(self, branches: Sequence[Tensor]) -> Tensor:
        """pi_C(pi_L(branches)): one level's 1 to 3 branches (N, C, H, W) -> (N, C, H, W)."""
        if not (isinstance(self.scale, ScaleAwareAttention)
                and isinstance(self.task, TaskAwareAttention) and fusable(branches)
                and not _hooked(self.scale) and not _hooked(self.task)):
            return self.task(self.scale(branches))
        # the same math in one pass over memory (ops.scale_task): the dynamic ReLU's input
        # average is the weighted sum of the branches' averages, which the scale weights
        # already needed, so the weighted sum is never written out
        means = [global_average(b) for b in branches]  # (N, C) each
        weights = torch.cat([self.scale.weight_of(m) for m in means], 1) / len(branches)
        mean = sum(weights[:, i:i + 1] * m for i, m in enumerate(means))
        return scale_task(branches, weights, *self.task.coefficients_of(mean))


def _hooked(module: nn.Module) -> bool:
    """Whether a forward hook would see ``module`` called (e.g. the attention recorder): the fused
    pass does not call the attention modules, so they keep their own forward then."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks)


@MODELS.register_module()
class DynamicHead(BaseModule):
    """Dynamic Head as an mmdet neck: ``neck=[dict(type='FPN', ...), dict(type='DynamicHead', ...)]``.

    Input: a tuple/list of L >= 1 maps (N, in_channels, H_l, W_l), finest first (sizes
    non-increasing). Output: a tuple of L maps (N, out_channels, H_l, W_l). With in_channels !=
    out_channels the first block's convs map C_in -> C_out (its offset conv reads C_in), the
    other blocks work at C_out.

    Args:
        in_channels, out_channels: channels of the inputs and outputs (256 in the paper).
        num_blocks: stacked DyHead blocks (6 in the paper).
        scale_aware: pi_L; off -> plain mean over levels.
        spatial_aware: pi_S; off -> plain 3x3 convs (same weights, no offsets, no masks).
        task_aware: pi_C; off -> plain ReLU.
        hsigmoid: scale attention's hard sigmoid, 'reference' (relu then relu6(x+3)/6, both codes)
            or 'paper' ((x+1)/2 clamped).
        spatial_bias: bias in the deformable convs (official: True, mmdet: False).
        norm_cfg: norm after each deformable conv; GroupNorm(16) in both codes.
        zero_init_offset: zero-initialise the offset conv (mmdet: True; official: False).
        legacy_offsets: reproduce the coarser-branch offsets of mmdet's DyHead and
            microsoft/DynamicHead exactly (for their trained weights); False gives each branch
            offsets of its own size.
        dcn_impl: 'auto' (our gather + GEMM kernel on CPU, mmcv's on GPU), 'torch' or 'mmcv'.
        with_cp: gradient checkpointing (mmdet's name): in training, each block's activations
            are recomputed in the backward instead of kept, for memory at the cost of a second
            forward of each block.
    """

    def __init__(self, in_channels: int = 256, out_channels: int = 256, num_blocks: int = 6,
                 scale_aware: bool = True, spatial_aware: bool = True, task_aware: bool = True,
                 hsigmoid: str = 'reference', spatial_bias: bool = False,
                 norm_cfg: Optional[dict] = DEFAULT_NORM, zero_init_offset: bool = True,
                 legacy_offsets: bool = False, dcn_impl: str = 'auto', with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        owner = 'DynamicHead'
        super().__init__(init_cfg=options.init_cfg(owner, init_cfg))
        self.in_channels = options.positive_int(owner, 'in_channels', in_channels)
        self.out_channels = options.positive_int(owner, 'out_channels', out_channels)
        self.num_blocks = options.positive_int(owner, 'num_blocks', num_blocks)
        for name, value in (('scale_aware', scale_aware), ('spatial_aware', spatial_aware),
                            ('task_aware', task_aware), ('spatial_bias', spatial_bias),
                            ('zero_init_offset', zero_init_offset),
                            ('legacy_offsets', legacy_offsets), ('with_cp', with_cp)):
            options.flag(owner, name, value)
        self.with_cp = with_cp
        options.hsigmoid(owner, hsigmoid)
        options.dcn_impl(owner, dcn_impl)
        options.norm_cfg(owner, norm_cfg, self.out_channels)
        if task_aware:
            options.reduction(owner, self.out_channels, 4)
        if legacy_offsets and not spatial_aware:
            raise ValueError('DynamicHead: legacy_offsets=True needs spatial_aware=True '
                             '(without offsets there is nothing to reproduce)')
        self.blocks = nn.ModuleList(
            DynamicHeadBlock(self.in_channels if i == 0 else self.out_channels,
                             self.out_channels, scale_aware, spatial_aware, task_aware, hsigmoid,
                             spatial_bias, norm_cfg, zero_init_offset, legacy_offsets, dcn_impl)
            for i in range(self.num_blocks))

    @property
    def legacy_offsets(self) -> bool:
        return self.blocks[0].spatial.legacy_offsets

    @property
    def dcn_impl(self) -> str:
        return self.blocks[0].spatial.dcn_impl

    @dcn_impl.setter
    def dcn_impl(self, impl: str):
        options.dcn_impl('DynamicHead', impl)
        for block in self.blocks:
            block.spatial.dcn_impl = impl

    def check_inputs(self, inputs) -> List[Tensor]:
        """Raise a TypeError/ValueError naming the problem, before anything reaches mmcv."""
        if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (tuple, list)):
            what = (f'a tensor of shape {tuple(inputs.shape)}' if isinstance(inputs, torch.Tensor)
                    else type(inputs).__name__)
            raise TypeError(f'DynamicHead expects a tuple or list of feature maps (N, C, H, W), '
                            f'finest level first; got {what}')
        if len(inputs) == 0:
            raise ValueError('DynamicHead got an empty sequence of feature maps')
        for level, x in enumerate(inputs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f'DynamicHead: level {level} is a {type(x).__name__}, '
                                f'not a tensor')
            if x.dim() != 4:
                raise ValueError(f'DynamicHead: level {level} must be 4D (N, C, H, W), got shape '
                                 f'{tuple(x.shape)}')
            if x.shape[1] != self.in_channels:
                raise ValueError(f'DynamicHead: level {level} has {x.shape[1]} channels, but '
                                 f'in_channels={self.in_channels}')
            if x.shape[0] != inputs[0].shape[0]:
                raise ValueError(f'DynamicHead: batch sizes differ between levels: level 0 has '
                                 f'{inputs[0].shape[0]}, level {level} has {x.shape[0]}')
            if x.shape[2] < 1 or x.shape[3] < 1 or x.shape[0] < 1:
                raise ValueError(f'DynamicHead: level {level} is empty, shape {tuple(x.shape)}')
            if level == 0:
                continue
            finer = inputs[level - 1].shape
            if x.shape[2] > finer[2] or x.shape[3] > finer[3]:
                raise ValueError(f'DynamicHead: levels must go finest first; level {level} '
                                 f'{tuple(x.shape[-2:])} is larger than level {level - 1} '
                                 f'{tuple(finer[-2:])}')
            half = stride2_size(finer[2], finer[3])
            if self.legacy_offsets and tuple(x.shape[-2:]) != half:
                raise ValueError(
                    f'DynamicHead(legacy_offsets=True) reproduces the reference codes, which '
                    f'need each level to be the stride-2 size of the finer one: level {level} is '
                    f'{tuple(x.shape[-2:])}, expected {half}. Use legacy_offsets=False.')
        return list(inputs)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        feats = self.check_inputs(inputs)
        if feats[0].device.type == 'cpu' and not (torch.onnx.is_in_onnx_export()
                                                   or torch.jit.is_tracing()):
            # our CPU kernels read channels-last maps (and make the blocks' outputs so): convert
            # once here rather than in each conv of the first block, forward and backward
            feats = [to_channels_last(f) for f in feats]
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                feats = checkpoint(block, feats, use_reentrant=False)
            else:
                feats = block(feats)
        return tuple(to_contiguous(f) for f in feats)
