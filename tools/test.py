#!/usr/bin/env python
"""Evaluate a checkpoint, as mmdet's tools/test.py, with mmdet_dyhead loaded (CPU or GPU).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out results.pkl]
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
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    p.add_argument('--show', action='store_true', help='show predictions in a window')
    p.add_argument('--show-dir', help='save images with predictions drawn, under the work dir')
    p.add_argument('--wait-time', type=float, default=2, help='seconds per image with --show')
    p.add_argument('--tta', action='store_true', help='test-time augmentation from the config')
    add_common_args(p)
    return p.parse_args()


def check_checkpoint_matches(model, path):
    """Refuse to evaluate a checkpoint that does not fit the config (mmengine only warns)."""
    from mmengine.model import is_model_wrapper

    from mmdet_dyhead.checkpoint import load_local_checkpoint
    ckpt = load_local_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    own = (model.module if is_model_wrapper(model) else model).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f'{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}'
                    for k in set(own) & set(state)
                    if hasattr(state[k], 'shape') and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(keys):
            return ', '.join(keys[:8]) + (f' (+{len(keys) - 8} more)' if len(keys) > 8 else '')
        lines = [f'{path} does not match the config:']
        if missing:
            lines.append(f'  missing in the checkpoint ({len(missing)}): {few(missing)}')
        if unexpected:
            lines.append(f'  not in the model ({len(unexpected)}): {few(unexpected)}')
        if shapes:
            lines.append(f'  wrong shapes ({len(shapes)}): {few(shapes)}')
        raise SystemExit('\n'.join(lines))


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
    init_distributed_on_cpu(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
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
