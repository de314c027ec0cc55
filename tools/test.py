#!/usr/bin/env python
"""Evaluate a checkpoint, as mmdet's tools/test.py, with mmdet_dyhead loaded (CPU or GPU).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out results.pkl]
    python tools/test.py CONFIG EXPORT_DIR --backend onnxruntime|openvino [...]

With --backend, the model exported by tools/deploy.py in EXPORT_DIR runs in that runtime inside
the config's detector (mmdet's own decoding and NMS): the same metrics line, --out, --cfg-options.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmdet_dyhead  # noqa: E402,F401
from mmdet_dyhead.utils.config import add_common_args, load_config  # noqa: E402
from mmdet_dyhead.utils.distributed import init_distributed_on_cpu, shutdown_distributed  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    p.add_argument('config', help='test config file path')
    p.add_argument('checkpoint', help='checkpoint file, or with --backend the export folder')
    p.add_argument('--backend', choices=('onnxruntime', 'openvino'),
                   help='evaluate the model exported by tools/deploy.py in this runtime')
    p.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    p.add_argument('--show', action='store_true', help='show predictions in a window')
    p.add_argument('--show-dir', help='save images with predictions drawn, under the work dir')
    p.add_argument('--wait-time', type=float, default=2, help='seconds per image with --show')
    p.add_argument('--tta', action='store_true', help='test-time augmentation from the config')
    add_common_args(p)
    return p.parse_args()


def check_checkpoint_matches(model, path):
    """Refuse to evaluate a checkpoint that does not fit the config (mmengine only warns)."""
    from mmdet_dyhead.checkpoint import check_matches
    try:
        check_matches(model, path)
    except ValueError as e:
        raise SystemExit(str(e)) from e


def main():
    args = parse_args()
    from mmdet.engine.hooks.utils import trigger_visualization_hook
    from mmdet.evaluation import DumpDetResults
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if args.backend is None and not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.backend is not None:
        from mmdet_dyhead.deploy import read_meta, require
        require(args.backend)
        try:
            meta = read_meta(args.checkpoint)
        except FileNotFoundError as e:
            raise SystemExit(str(e)) from e
        if meta['backend'] != args.backend:
            raise SystemExit(f'{args.checkpoint} was exported for {meta["backend"]}, not '
                             f'{args.backend}: export again with --backend {args.backend}')
        if args.tta:
            raise SystemExit('--tta is not supported with --backend')
        cfg.model = dict(type='DeployedDetector', detector=cfg.model, deploy_dir=args.checkpoint,
                         backend=args.backend)
        cfg.load_from = None
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise SystemExit('--tta needs tta_model and tta_pipeline in the config')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    init_distributed_on_cpu(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.backend is None:
        check_checkpoint_matches(runner.model, args.checkpoint)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit('--out must be a .pkl file')
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    shutdown_distributed()
    print('metrics:', json.dumps({k: round(float(v), 4) for k, v in metrics.items()}))
    return metrics


if __name__ == '__main__':
    main()
