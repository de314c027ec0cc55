"""One validator per option of the DyHead modules.

Each raises a TypeError (wrong kind of value) or ValueError (wrong value) that names the module,
the option and the value, when the module is built rather than at the first forward.
"""
import numbers
from typing import Optional

DCN_IMPLS = ('auto', 'torch', 'mmcv')
HSIGMOIDS = ('reference', 'paper')


def positive_int(owner: str, name: str, value) -> int:
    # bool is an Integral: num_blocks=True would silently mean 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f'{owner}: {name} must be a positive integer, got {value!r}')
    return int(value)


def flag(owner: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{owner}: {name} must be True or False, got {value!r}')
    return value


def dcn_impl(owner: str, value) -> str:
    if value not in DCN_IMPLS:
        raise ValueError(f'{owner}: dcn_impl must be one of {DCN_IMPLS}, got {value!r}')
    return value


def hsigmoid(owner: str, value) -> str:
    if value not in HSIGMOIDS:
        raise ValueError(f'{owner}: hsigmoid must be one of {HSIGMOIDS}, got {value!r}')
    return value


def reduction(owner: str, channels: int, value: int) -> int:
    """The dynamic ReLU squeezes C to C // reduction: at least one hidden unit."""
    value = positive_int(owner, 'reduction', value)
    if channels // value < 1:
        raise ValueError(f'{owner}: task-aware attention needs channels >= reduction ({value}), '
                         f'got {channels} channels')
    return value


def norm_cfg(owner: str, value: Optional[dict], channels: int) -> Optional[dict]:
    if value is None:
        return None
    if not hasattr(value, 'get') or 'type' not in value:
        raise TypeError(f'{owner}: norm_cfg must be a dict with a type, got {value!r}')
    groups = value.get('num_groups')
    if value['type'] == 'GN' and (not groups or channels % groups):
        raise ValueError(f'{owner}: out_channels ({channels}) must be divisible by the '
                         f'GroupNorm groups ({groups})')
    return value


def init_cfg(owner: str, value):
    """Only ``Pretrained`` (or None): mmengine's other initialisers would overwrite the
    zero-initialised offset convs and the attentions' init without a word."""
    cfgs = value if isinstance(value, (list, tuple)) else [value]
    for cfg in cfgs:
        if cfg is None:
            continue
        if not hasattr(cfg, 'get') or cfg.get('type') != 'Pretrained':
            raise ValueError(
                f'{owner}: init_cfg may only load weights (dict(type="Pretrained", '
                f'checkpoint=...)), got {cfg!r}; other initialisers would overwrite the '
                f'zero-initialised offset convs and the attentions (mmdet\'s DyHead refuses '
                f'init_cfg for the same reason)')
    return value
