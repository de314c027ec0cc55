"""The process group of a distributed run on a machine without GPUs (gloo), and its clean end."""
import torch
from mmengine.config import Config


def init_distributed_on_cpu(cfg: Config):
    """Start the gloo process group on a machine without GPUs.

    mmengine's init_dist calls torch.cuda.set_device, which a CPU build of torch lacks; the runner
    skips it when a process group already exists."""
    import torch.distributed as dist
    if cfg.launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if cfg.launcher != 'pytorch':
        raise SystemExit(f'--launcher {cfg.launcher} needs GPUs; on a CPU use --launcher pytorch '
                         f'(tools/dist_train.sh)')
    dist.init_process_group(backend='gloo')


def shutdown_distributed():
    """Destroy the process group before exit: left to interpreter shutdown, gloo's threads can
    abort the process ("terminate called without an active exception") after a finished run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
