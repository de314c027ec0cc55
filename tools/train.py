#!/usr/bin/env python
"""Train a detector, as mmdet's tools/train.py, with mmdet_dyhead loaded (CPU or GPU).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmdet_dyhead  # noqa: E402,F401  (registers DynamicHead, safe checkpoint loading)
from mmdet_dyhead.utils.config import (  # noqa: E402
    add_common_args,
    add_learning_curve,
    enable_amp,
    load_config,
)
from mmdet_dyhead.utils.distributed import init_distributed_on_cpu, shutdown_distributed  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description='Train a detector')
    p.add_argument('config', help='train config file path')
    p.add_argument('--amp', action='store_true', help='mixed precision (fp16 on GPU, bf16 on CPU)')
    p.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the batch size')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in the work dir')
    add_common_args(p)
    return p.parse_args()


def main():
    args = parse_args()
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    setup_cache_size_limit_of_dynamo()
    cfg = load_config(args)
    add_learning_curve(cfg)  # {work_dir}/learning_curve.png
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    init_distributed_on_cpu(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    main()
