#!/usr/bin/env python
"""Evaluate a checkpoint, as mmdet's tools/test.py, with mmdet_dyhead loaded (CPU or GPU).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out results.pkl]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmdet_dyhead  # noqa: E402,F401
from mmdet_dyhead.cli import add_common_args, load_config  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    p.add_argument('config', help='test config file path')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    p.add_argument('--show', action='store_true', help='show predictions in a window')
    p.add_argument('--show-dir', help='save images with predictions drawn, under the work dir')
    p.add_argument('--wait-time', type=float, default=2, help='seconds per image with --show')
    p.add_argument('--tta', action='store_true', help='test-time augmentation from the config')
    add_common_args(p)
    return p.parse_args()


def main():
    args = parse_args()
    from mmdet.engine.hooks.utils import trigger_visualization_hook
    from mmdet.evaluation import DumpDetResults
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise SystemExit('--tta needs tta_model and tta_pipeline in the config')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit('--out must be a .pkl file')
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
