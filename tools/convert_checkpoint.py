#!/usr/bin/env python
"""Convert a detector checkpoint with mmdet's DyHead or microsoft/DynamicHead to DynamicHead keys.

    python tools/convert_checkpoint.py SRC DST [--source mmdet|official] [--neck-prefix neck.1.]

mmdet: every ``...dyhead_blocks.N...`` key is renamed (the rest of the detector is already mmdet's);
use the neck with ``legacy_offsets=True``. official (detectron2): the ``...dyhead_tower.N...`` keys
are renamed under --neck-prefix; the other keys (detectron2 backbone, FPN and head) are kept as
they are and listed, since their mmdet names depend on the detector you build.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from mmdet_dyhead.checkpoint import load_local_checkpoint  # noqa: E402
from mmdet_dyhead.converters import (  # noqa: E402
    convert_mmdet_state_dict,
    convert_official_state_dict,
    official_neck_cfg,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--source', choices=['auto', 'mmdet', 'official'], default='auto')
    p.add_argument('--neck-prefix', default='neck.1.',
                   help='where DynamicHead sits in the detector (official source only)')
    p.add_argument('--trust', action='store_true', help='load SRC with full unpickling')
    a = p.parse_args(argv)
    ckpt = load_local_checkpoint(a.src, map_location='cpu', trust=a.trust or None)
    state = ckpt.get('state_dict', ckpt.get('model', ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise SystemExit(f'{a.src}: no state dict of tensors found (looked for "state_dict", '
                         f'"model" or a plain dict)')
    source = a.source
    if source == 'auto':
        if any('dyhead_blocks.' in k for k in state):
            source = 'mmdet'
        elif any('dyhead_tower.' in k for k in state):
            source = 'official'
        else:
            raise SystemExit(f'{a.src}: neither mmdet DyHead keys (dyhead_blocks.N) nor '
                             f'microsoft/DynamicHead keys (dyhead_tower.N) found')
    if source == 'mmdet':
        converted, others = convert_mmdet_state_dict(state)  # keeps each key's own prefix
        note = 'build the neck with legacy_offsets=True'
        unconverted = []
    else:
        converted, others = convert_official_state_dict(state, out_prefix=a.neck_prefix)
        cfg = official_neck_cfg(state)
        note = f'neck config: {cfg}'
        unconverted = sorted(others)
    out = dict(state_dict={**others, **converted},
               meta=dict(converted_from=source, source_file=osp.basename(a.src), note=note))
    torch.save(out, a.dst)
    print(f'{a.src} ({source}): {len(converted)} DyHead tensors renamed, {len(others)} kept; '
          f'{note}')
    if unconverted:
        print(f'{len(unconverted)} non-DyHead keys kept under their detectron2 names, e.g. '
              f'{unconverted[:3]}')
    print(f'wrote {a.dst}')


if __name__ == '__main__':
    main()
