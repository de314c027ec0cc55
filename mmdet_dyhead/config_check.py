"""Build-time checks of a detector config around DynamicHead, with messages that name the problem.

mmdet builds ``neck=[FPN, DynamicHead]`` one module at a time, so a channel mismatch between them
would only surface at the first forward. ``check_model_cfg`` catches it when the config is read.
"""
from typing import Any


def _get(cfg: Any, key: str, default=None):
    return cfg.get(key, default) if hasattr(cfg, 'get') else default


def _channels_out(module_cfg) -> Any:
    return _get(module_cfg, 'out_channels')


def check_model_cfg(model_cfg) -> None:
    """Raise ValueError if DynamicHead's channels disagree with what feeds it or reads it."""
    necks = _get(model_cfg, 'neck')
    if not isinstance(necks, (list, tuple)):
        necks = [necks] if necks is not None else []
    for i, neck in enumerate(necks):
        if _get(neck, 'type') != 'DynamicHead':
            continue
        cin = _get(neck, 'in_channels', 256)
        if i > 0:
            prev = _channels_out(necks[i - 1])
            if prev is not None and prev != cin:
                raise ValueError(
                    f'neck[{i}] DynamicHead has in_channels={cin}, but neck[{i - 1}] '
                    f'{_get(necks[i - 1], "type")} outputs {prev} channels (out_channels)')
        cout = _get(neck, 'out_channels', 256)
        if i + 1 < len(necks):
            nxt = _get(necks[i + 1], 'in_channels')
            if isinstance(nxt, int) and nxt != cout:
                raise ValueError(f'neck[{i + 1}] expects {nxt} input channels, but neck[{i}] '
                                 f'DynamicHead outputs out_channels={cout}')
            continue
        heads = [('bbox_head', _get(model_cfg, 'bbox_head')), ('rpn_head', _get(model_cfg, 'rpn_head'))]
        roi = _get(model_cfg, 'roi_head')
        if roi is not None:
            extractor = _get(roi, 'bbox_roi_extractor')
            heads.append(('roi_head.bbox_roi_extractor', extractor))
        for name, head in heads:
            if head is None:
                continue
            key = 'out_channels' if name.endswith('extractor') else 'in_channels'
            hin = _get(head, key)
            if isinstance(hin, int) and hin != cout:
                raise ValueError(f'{name}.{key}={hin}, but the DynamicHead before it outputs '
                                 f'out_channels={cout}')
