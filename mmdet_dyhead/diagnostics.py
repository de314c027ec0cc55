"""What a trained DynamicHead's attentions do on real inputs, read with forward hooks (the neck's
forward is not changed): per block, the offsets' size, the masks, the scale weights and the
dynamic-ReLU coefficients; and the scale of the pyramid that feeds the first block.

``tools/attention_stats.py`` prints these for a config and checkpoint on some images.
"""
from collections import defaultdict
from typing import Dict, List

import torch
from torch import Tensor, nn

from .models.attentions import ScaleAwareAttention, SpatialAwareAttention, TaskAwareAttention


class AttentionStats:
    """Collects per-module statistics while attached to ``model`` (use as a context manager).

    ``summary()`` averages them over every call (the largest for maxima): for each
    SpatialAwareAttention the mean and max |offset| (pixels) and the mean mask; for each
    ScaleAwareAttention the mean weight, overall and per level and branch (``P0_same``,
    ``P0_coarser``, ``P1_finer``, ...: level 0 is the finest input); for each TaskAwareAttention
    the mean a1 and a2 (ReLU is a1 = 1, a2 = 0); for the module that feeds the first DynamicHead,
    the std of each level.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.values: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
        self.handles = []

    def _add(self, name: str, key: str, value: float):
        self.values[name][key].append(float(value))

    def __enter__(self):
        for name, module in self.model.named_modules():
            if isinstance(module, SpatialAwareAttention) and module.offset_conv is not None:
                self.handles.append(module.offset_conv.register_forward_hook(
                    self._offsets_hook(name)))
            elif isinstance(module, ScaleAwareAttention):
                self.handles.append(self._patch_scale(name, module))
            elif isinstance(module, TaskAwareAttention):
                self.handles.append(module.register_forward_pre_hook(self._task_hook(name, module)))
            elif type(module).__name__ == 'DynamicHead':
                self.handles.append(module.register_forward_pre_hook(self._input_hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _offsets_hook(self, name):
        def hook(module, inputs, out: Tensor):
            offsets, masks = out[:, :18], out[:, 18:].sigmoid()
            self._add(name, 'offset_abs_mean', offsets.abs().mean())
            self._add(name, 'offset_abs_max', offsets.abs().max())
            self._add(name, 'mask_mean', masks.mean())
        return hook

    def _patch_scale(self, name, module):
        # its weights come from F.linear on the pooled map (fc's forward never runs), so its
        # attention() is wrapped for the time the stats are attached
        # attention() is wrapped for the time the stats are attached. forward() is wrapped too,
        # to name each weight by its level and branch: the neck calls it once per level, finest
        # first, with [same, finer (not on the finest), coarser (not on the coarsest)]
        original, original_forward = module.attention, module.forward
        state = dict(level=0, branch=None)

        def attention(x):
            weight = original(x)
            self._add(name, 'weight_mean', weight.mean())
            if state['branch'] is not None:
                self._add(name, f'P{state["level"]}_{state["branch"].pop(0)}', weight.mean())
            return weight

        def forward(feats):
            level, n = state['level'], len(feats)
            last = n < 3 and level > 0 or n == 1
            state['branch'] = ['same'] + (['finer'] if level > 0 else []) + (
                [] if last else ['coarser'])
            if len(state['branch']) != n:  # not called as the neck calls it: no names
                state['branch'] = None
            try:
                return original_forward(feats)
            finally:
                state['level'], state['branch'] = (0 if last else level + 1), None
        module.attention, module.forward = attention, forward
        return _Restore(module, 'attention', 'forward')

    def _task_hook(self, name, module):
        def hook(mod, inputs):
            a1, _, a2, _ = module.coefficients(inputs[0])
            self._add(name, 'a1_mean', a1.mean())
            self._add(name, 'a2_mean', a2.mean())
        return hook

    def _input_hook(self, name):
        def hook(mod, inputs):
            for level, x in enumerate(inputs[0]):
                self._add(name + '.input', f'level{level}_std', x.std())
        return hook

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Per module: the mean over calls, the largest for ``*_max``."""
        return {name: {k: round(max(v) if k.endswith('_max') else sum(v) / len(v), 4)
                       for k, v in d.items()}
                for name, d in self.values.items()}


class _Restore:
    """A handle that removes an instance attribute (a patched method) when removed."""

    def __init__(self, obj, *attrs):
        self.obj, self.attrs = obj, attrs

    def remove(self):
        for attr in self.attrs:
            if attr in vars(self.obj):
                delattr(self.obj, attr)


@torch.no_grad()
def attention_stats(model: nn.Module, batches) -> Dict[str, Dict[str, float]]:
    """Run ``model`` (an mmdet detector) in predict mode on packed ``batches``; return the stats."""
    model.eval()
    with AttentionStats(model) as stats:
        for batch in batches:
            model(**model.data_preprocessor(batch, False), mode='predict')
    return stats.summary()
