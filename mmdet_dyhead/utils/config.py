"""Arguments and config loading shared by tools/train.py and tools/test.py (device fallbacks, --amp)."""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction


def add_common_args(parser: argparse.ArgumentParser):
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (or --local_rank)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args) -> Config:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    from ..config_check import check_model_cfg
    check_model_cfg(cfg.model)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if not torch.cuda.is_available():
        # NCCL needs GPUs: distributed runs on a CPU use gloo (no SyncBN needed: DyHead uses GN)
        env = cfg.setdefault('env_cfg', {})
        env.setdefault('dist_cfg', {})
        if env['dist_cfg'].get('backend', 'nccl') == 'nccl':
            env['dist_cfg']['backend'] = 'gloo'
        if args.launcher != 'none' and cfg.get('model_wrapper_cfg') is None:
            # mmengine passes device_ids=[LOCAL_RANK], which DDP rejects for a CPU module
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False,
                                         find_unused_parameters=cfg.get('find_unused_parameters',
                                                                        False))
    return cfg


def enable_amp(cfg: Config):
    """--amp: fp16 with dynamic loss scaling on a GPU, bf16 autocast on a CPU."""
    ow = cfg.optim_wrapper
    if ow.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'CPUAutocastOptimWrapper'):
        return
    if torch.cuda.is_available():
        ow.type, ow.loss_scale = 'AmpOptimWrapper', 'dynamic'
    else:  # mmengine's AmpOptimWrapper asserts a GPU
        ow.type, ow.dtype = 'CPUAutocastOptimWrapper', 'bfloat16'


def add_learning_curve(cfg: Config):
    """Adds a ``LearningCurveHook`` (loss and val mAP PNG in the work dir) unless the config has
    one, so every run of tools/train.py draws its learning curve."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(h.get('type') in ('LearningCurveHook', 'mmdet.LearningCurveHook') for h in hooks):
        hooks.append(dict(type='LearningCurveHook'))
    cfg.custom_hooks = hooks
