#!/usr/bin/env python
"""FLOPs and parameters of a config, counting the deformable convolutions (mmdet's tool skips them).

    python tools/get_flops.py CONFIG [--shape 800 1333]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config  # noqa: E402

from mmdet_dyhead.utils.build import build_detector  # noqa: E402
from mmdet_dyhead.utils.flops import count_flops  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--shape', type=int, nargs=2, default=[800, 1333], metavar=('H', 'W'))
    a = p.parse_args(argv)
    cfg = Config.fromfile(a.config)
    model = build_detector(cfg)
    r = count_flops(model, *a.shape)
    print(f'input shape: (3, {a.shape[0]}, {a.shape[1]})')
    print(f'FLOPs: {r["flops"] / 1e9:.2f} G (neck: {r["neck_flops"] / 1e9:.2f} G, '
          f'deformable convs included)')
    print(f'params: {r["params"] / 1e6:.2f} M')
    if r['unsupported']:
        print(f'not counted: {r["unsupported"]}')
    return r


if __name__ == '__main__':
    main()
