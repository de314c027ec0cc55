#!/usr/bin/env python
"""Pictures of what DynamicHead's attentions do on one image (the paper's Fig. 1 and 4).

    python tools/visualize_attention.py CONFIG CHECKPOINT IMAGE [--out DIR] [--points 4]
                                        [--cfg-options K=V ...] [--device cpu]

Writes DIR/scale.png (scale-aware weight per block, level and branch), DIR/spatial.png (the 9
sampling points of each branch at the strongest positions, sized by their mask) and DIR/task.png
(which piece of the dynamic ReLU wins per channel, and its coefficients). Any detector config
whose neck has a DynamicHead; the neck is read with hooks, its forward is unchanged.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402

from mmdet_dyhead.utils.build import build_detector  # noqa: E402
from mmdet_dyhead.visualization.image import visualize  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('image')
    p.add_argument('--out', default='outputs/attention', help='folder for the PNGs')
    p.add_argument('--points', type=int, default=4, help='positions drawn in spatial.png')
    p.add_argument('--device', default='cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    a = p.parse_args(argv)
    if a.points < 1:
        p.error(f'--points must be >= 1, got {a.points}')
    cfg = Config.fromfile(a.config)
    if a.cfg_options:
        cfg.merge_from_dict(a.cfg_options)
    model = build_detector(cfg, a.device, a.checkpoint)
    out = visualize(model, cfg, a.image, a.out, a.points)
    for name, path in out['paths'].items():
        print(f'{name}: {path}')
    return out


if __name__ == '__main__':
    main()
