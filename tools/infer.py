#!/usr/bin/env python
"""Detect objects in image(s) and save them with the predicted boxes drawn (mmdet's DetInferencer).

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir outputs/infer] [--score-thr 0.3]
    python tools/infer.py CONFIG EXPORT_DIR IMAGE [...] --backend onnxruntime|openvino

With --backend, the model exported by tools/deploy.py runs in that runtime (same boxes).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402

import mmdet_dyhead  # noqa: E402,F401


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('images', nargs='+', help='image files or folders')
    p.add_argument('--out-dir', default='outputs/infer')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    p.add_argument('--backend', choices=('onnxruntime', 'openvino'),
                   help='run the model exported by tools/deploy.py (CHECKPOINT is its folder)')
    a = p.parse_args(argv)
    for path in (a.config, a.checkpoint, *a.images):
        if not osp.exists(path):
            raise SystemExit(f'not found: {path}')
    from mmdet.apis import DetInferencer
    cfg = Config.fromfile(a.config)
    if a.cfg_options:
        cfg.merge_from_dict(a.cfg_options)
    if a.backend:
        from mmdet_dyhead.deploy import attach, require
        require(a.backend)
        inferencer = DetInferencer(model=cfg, weights=None, device='cpu', show_progress=False)
        try:
            attach(inferencer.model, a.checkpoint, a.backend)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e)) from e
    else:
        from mmdet_dyhead.checkpoint import check_matches
        inferencer = DetInferencer(model=cfg, weights=a.checkpoint, device=a.device,
                                   show_progress=False)
        try:  # mmengine only warns about keys that do not fit, and leaves them initialised
            check_matches(inferencer.model, a.checkpoint)
        except ValueError as e:
            raise SystemExit(str(e)) from e
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
