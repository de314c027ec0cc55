#!/usr/bin/env python
"""Export a detector with DynamicHead to ONNX for a stock runtime (no custom op library).

    python tools/deploy.py CONFIG CHECKPOINT --backend onnxruntime|openvino [--out DIR]
                           [--shape H W] [--dynamic] [--batch N] [--cfg-options K=V ...]

Writes DIR/{features,bbox_head | rpn_head,roi_bbox_head[,roi_mask_head]}.onnx, deploy.json and
config.py. Every deformable conv is the runtime's own op (ONNX DeformConv for onnxruntime,
org.openvinotoolkit::DeformableConv2D for OpenVINO); decoding and NMS stay mmdet's code, run by
tools/test.py CONFIG DIR --backend ... and tools/infer.py CONFIG DIR IMAGES --backend ....
Default input size: the config's test resize, padded to its divisor (images are padded to it);
--dynamic: any batch and any H, W that are multiples of the config's pad divisor.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402

from mmdet_dyhead.checkpoint import check_matches  # noqa: E402
from mmdet_dyhead.deploy import BACKENDS, export, require  # noqa: E402
from mmdet_dyhead.utils.build import build_detector  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--backend', required=True, choices=BACKENDS)
    p.add_argument('--out', help='output folder (default: outputs/deploy/<config>_<backend>)')
    p.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'), help='fixed input size')
    p.add_argument('--dynamic', action='store_true', help='dynamic batch, height and width')
    p.add_argument('--batch', type=int, default=1, help='batch size of a fixed-size export')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    a = p.parse_args(argv)
    require(a.backend, export=True)  # says what to install before anything is built
    for path in (a.config, a.checkpoint):
        if not osp.isfile(path):
            raise SystemExit(f'not found: {path}')
    if a.dynamic and a.shape:
        p.error('--shape fixes the size; --dynamic leaves it free: give one of them')
    cfg = Config.fromfile(a.config)
    if a.cfg_options:
        cfg.merge_from_dict(a.cfg_options)
    out = a.out or osp.join('outputs', 'deploy',
                            f'{osp.splitext(osp.basename(a.config))[0]}_{a.backend}')
    model = build_detector(cfg, 'cpu', a.checkpoint)
    try:
        check_matches(model, a.checkpoint)  # a config that does not fit would export init weights
    except ValueError as e:
        raise SystemExit(str(e)) from e
    t0 = time.perf_counter()
    try:
        meta = export(model, cfg, out, a.backend, a.shape, a.dynamic, a.batch, a.checkpoint)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    size = 'dynamic' if a.dynamic else 'x'.join(str(s) for s in meta['input_shape'])
    print(f'exported {len(meta["parts"])} parts ({", ".join(meta["parts"])}) for {a.backend}, '
          f'input {size}, in {time.perf_counter() - t0:.1f} s: {out}')
    return out


if __name__ == '__main__':
    main()
