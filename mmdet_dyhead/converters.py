"""Weights from mmdet's ``DyHead`` and from microsoft/DynamicHead into ``DynamicHead``.

Both references feed the coarser-level branch misread offsets (see
``deform_conv_norm.legacy_view``); their weights were trained that way, so converted necks use
``legacy_offsets=True``.
"""
import re
from typing import Dict, Optional, Tuple

from torch import Tensor

from .models import DynamicHead

# suffix after "dyhead_blocks.{i}." -> suffix after "blocks.{i}."
_MMDET_KEYS = [
    (r'spatial_conv_offset\.', 'spatial.offset_conv.'),
    (r'spatial_conv_mid\.', 'spatial.same.'),
    (r'spatial_conv_low\.', 'spatial.finer.'),      # stride 2 on the finer level
    (r'spatial_conv_high\.', 'spatial.coarser.'),   # stride 1 on the coarser level, upsampled
    (r'scale_attn_module\.1\.', 'scale.fc.'),
    (r'task_attn_module\.conv1\.conv\.', 'task.fc1.'),
    (r'task_attn_module\.conv2\.conv\.', 'task.fc2.'),
]
# suffix after "dyhead_tower.{i}." (detectron2) -> suffix after "blocks.{i}."
_OFFICIAL_KEYS = [
    (r'offset\.', 'spatial.offset_conv.'),
    (r'DyConv\.0\.conv\.', 'spatial.coarser.conv.'),
    (r'DyConv\.0\.bn\.', 'spatial.coarser.norm.'),
    (r'DyConv\.1\.conv\.', 'spatial.same.conv.'),
    (r'DyConv\.1\.bn\.', 'spatial.same.norm.'),
    (r'DyConv\.2\.conv\.', 'spatial.finer.conv.'),
    (r'DyConv\.2\.bn\.', 'spatial.finer.norm.'),
    (r'AttnConv\.1\.', 'scale.fc.'),
    (r'relu\.fc\.0\.', 'task.fc1.'),
    (r'relu\.fc\.2\.', 'task.fc2.'),
]


def _convert(state: Dict[str, Tensor], block_re: str, table, out_prefix: Optional[str],
             strict: bool) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Returns (converted DyHead keys, untouched other keys); out_prefix None keeps the source's."""
    pattern = re.compile(rf'^(.*?){block_re}\.(\d+)\.(.*)$')
    converted, others = {}, {}
    for key, value in state.items():
        m = pattern.match(key)
        if not m:
            others[key] = value
            continue
        idx, rest = m.group(2), m.group(3)
        for src, dst in table:
            if re.match(src, rest):
                new_rest = re.sub('^' + src, dst, rest)
                break
        else:
            if strict:
                raise KeyError(f'unknown DyHead key {key!r}: no mapping for {rest!r}')
            others[key] = value
            continue
        if new_rest.startswith('task.fc') and value.dim() == 2:
            value = value[:, :, None, None]  # official DyReLU uses Linear layers
        prefix = m.group(1) if out_prefix is None else out_prefix
        converted[f'{prefix}blocks.{idx}.{new_rest}'] = value
    return converted, others


def convert_mmdet_state_dict(state: Dict[str, Tensor], out_prefix: Optional[str] = None,
                             strict: bool = True) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """mmdet ``DyHead`` keys (``...dyhead_blocks.{i}...``) -> ``DynamicHead`` keys.

    Returns (converted, others): the DyHead keys renamed (under ``out_prefix``, or under their own
    prefix when it is None, e.g. ``neck.1.``) and every other key unchanged.
    """
    return _convert(state, r'dyhead_blocks', _MMDET_KEYS, out_prefix, strict)


def convert_official_state_dict(state: Dict[str, Tensor], out_prefix: Optional[str] = '',
                                strict: bool = True) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """microsoft/DynamicHead keys (``...dyhead_tower.{i}...``) -> ``DynamicHead`` keys.

    Its deformable convs have a bias (build the neck with ``spatial_bias=True``) and its DyReLU
    uses Linear layers (reshaped to 1x1 convs here).
    """
    return _convert(state, r'dyhead_tower', _OFFICIAL_KEYS, out_prefix, strict)


def official_neck_cfg(state: Dict[str, Tensor], prefix_re: str = r'dyhead_tower') -> dict:
    """The ``DynamicHead`` config that matches a microsoft/DynamicHead state dict."""
    blocks = {int(m.group(1)) for k in state for m in [re.search(rf'{prefix_re}\.(\d+)\.', k)] if m}
    if not blocks:
        raise ValueError('no microsoft/DynamicHead keys (dyhead_tower.N.*) in this state dict')
    w0 = next(v for k, v in state.items() if re.search(rf'{prefix_re}\.0\.DyConv\.1\.conv\.weight$', k))
    wl = next(v for k, v in state.items()
              if re.search(rf'{prefix_re}\.{max(blocks)}\.DyConv\.1\.conv\.weight$', k))
    return dict(type='DynamicHead', in_channels=w0.shape[1], out_channels=wl.shape[0],
                num_blocks=len(blocks), spatial_bias=True, zero_init_offset=False,
                legacy_offsets=True)


def mmdet_neck_cfg(neck) -> dict:
    """The ``DynamicHead`` config equivalent to an mmdet ``DyHead`` module."""
    blocks = neck.dyhead_blocks
    first, last = blocks[0], blocks[-1]
    act = first.scale_attn_module[-1]
    if (getattr(act, 'bias', 3.0), getattr(act, 'divisor', 6.0)) != (3.0, 6.0):
        raise ValueError('only mmdet DyHead blocks with the default HSigmoid(bias=3, divisor=6) '
                         'scale activation can be converted')
    norm = getattr(first.spatial_conv_mid, 'norm', None)
    norm_cfg = (dict(type='GN', num_groups=norm.num_groups, requires_grad=True)
                if norm is not None else None)
    return dict(type='DynamicHead', in_channels=first.spatial_conv_mid.conv.in_channels,
                out_channels=last.spatial_conv_mid.conv.out_channels, num_blocks=len(blocks),
                spatial_bias=first.spatial_conv_mid.conv.bias is not None, norm_cfg=norm_cfg,
                zero_init_offset=getattr(neck, 'zero_init_offset', True), legacy_offsets=True)


def from_mmdet_dyhead(neck, **overrides) -> DynamicHead:
    """An mmdet ``DyHead`` module -> an equivalent ``DynamicHead`` (legacy offsets, same weights)."""
    cfg = mmdet_neck_cfg(neck)
    cfg.pop('type')
    cfg.update(overrides)
    ours = DynamicHead(**cfg)
    converted, others = convert_mmdet_state_dict(neck.state_dict(), out_prefix='')
    if others:
        raise ValueError(f'unexpected keys in the mmdet DyHead: {sorted(others)}')
    ours.load_state_dict(converted, strict=True)
    return ours.to(next(neck.parameters()).device)


def from_official_state_dict(state: Dict[str, Tensor], **overrides) -> DynamicHead:
    """A microsoft/DynamicHead state dict -> an equivalent ``DynamicHead``."""
    cfg = official_neck_cfg(state)
    cfg.pop('type')
    cfg.update(overrides)
    ours = DynamicHead(**cfg)
    converted, _ = convert_official_state_dict(state)
    ours.load_state_dict(converted, strict=True)
    return ours
