#!/usr/bin/env python
"""Inference latency/throughput and training-iteration time of any config, on CPU or GPU.

    python tools/benchmark.py CONFIG [--device cpu|cuda] [--batch-size 2] [--size 320 320]
                              [--iters 10] [--warmup 2] [--task infer|train|both]

mmdet's own benchmark calls .cuda(); this one runs where you ask. Inputs are synthetic images of
the given size (predict timing includes preprocessing and post-processing).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mmdet_dyhead.utils.build import build_detector, num_classes_of, synthetic_batch  # noqa: E402
from mmdet_dyhead.utils.timing import summarize, time_inference, time_train_iter  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--checkpoint')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--size', type=int, nargs=2, default=[320, 320], metavar=('H', 'W'))
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--task', choices=['infer', 'train', 'both'], default='both')
    p.add_argument('--json', help='also write the results to this file')
    a = p.parse_args(argv)
    cfg = Config.fromfile(a.config)
    model = build_detector(cfg, a.device, a.checkpoint)
    batch = synthetic_batch(a.batch_size, *a.size, num_classes_of(cfg))
    res = dict(config=a.config, device=a.device, batch_size=a.batch_size, size=a.size,
               threads=torch.get_num_threads())
    if a.task in ('infer', 'both'):
        med, iqr = summarize(time_inference(model, batch, a.device, a.iters, a.warmup))
        res.update(infer_s=med, infer_iqr_s=iqr, images_per_s=a.batch_size / med)
        print(f'inference: {med * 1000:.1f} ms per batch of {a.batch_size} (IQR {iqr * 1000:.1f}),'
              f' {a.batch_size / med:.2f} images/s')
    if a.task in ('train', 'both'):
        med, iqr = summarize(time_train_iter(model, batch, a.device, a.iters, a.warmup))
        res.update(train_iter_s=med, train_iter_iqr_s=iqr)
        print(f'training: {med * 1000:.1f} ms per iteration of {a.batch_size} images '
              f'(IQR {iqr * 1000:.1f})')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
