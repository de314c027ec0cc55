#!/usr/bin/env python
"""Detect objects in image(s) and save them with the predicted boxes drawn (mmdet's DetInferencer).

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir outputs/infer] [--score-thr 0.3]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmdet_dyhead  # noqa: E402,F401


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('images', nargs='+', help='image files or folders')
    p.add_argument('--out-dir', default='outputs/infer')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    a = p.parse_args(argv)
    for path in (a.config, a.checkpoint, *a.images):
        if not osp.exists(path):
            raise SystemExit(f'not found: {path}')
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=a.config, weights=a.checkpoint, device=a.device,
                               show_progress=False)
    os.makedirs(a.out_dir, exist_ok=True)
    results = inferencer(a.images, out_dir=a.out_dir, pred_score_thr=a.score_thr,
                         no_save_pred=False, return_datasamples=False)
    for img, pred in zip(a.images, results['predictions']):
        kept = sum(s >= a.score_thr for s in pred['scores'])
        print(f'{img}: {kept} boxes with score >= {a.score_thr}')
    print(f'drawn images: {osp.join(a.out_dir, "vis")}, predictions: {osp.join(a.out_dir, "preds")}')
    return results


if __name__ == '__main__':
    main()
