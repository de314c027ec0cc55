import os

import pytest
import torch

# Two cores: one torch process, both threads (see docs/testing.md).
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# TORCH_DEVICE=cuda runs the unit tests on a GPU (as timm's tests read it): every tensor and module
# the tests make lands there, so the comparisons exercise mmcv's CUDA kernels and ours on CUDA.
DEVICE = torch.device(os.environ.get('TORCH_DEVICE', 'cpu'))
if DEVICE.type == 'cuda' and not torch.cuda.is_available():
    pytest.exit(f'TORCH_DEVICE={DEVICE} but torch.cuda.is_available() is False', returncode=4)
if DEVICE.type != 'cpu':
    torch.set_default_device(DEVICE)


def pytest_collection_modifyitems(config, items):
    if DEVICE.type == 'cpu':
        return
    skip = pytest.mark.skip(reason=f'CPU-only code path (TORCH_DEVICE={DEVICE})')
    for item in items:
        if item.get_closest_marker('cpu_only'):
            item.add_marker(skip)


def perturb(module, std, replace=False):
    """Move every parameter away from its init (or replace it), so offsets and attentions matter."""
    with torch.no_grad():
        for p in module.parameters():
            if replace:
                p.normal_(0, std)
            else:
                p.add_(torch.randn_like(p) * std)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_run_options(root, epochs=1, val_interval=1):
    """--cfg-options that point a demo config at a tiny generated data set and shorten the run."""
    root = str(root) + '/'
    return ([f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')]
            + [f'{s}_evaluator.ann_file={root}annotations/val.json' for s in ('val', 'test')]
            + ['train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
               'test_dataloader.batch_size=2', f'train_cfg.max_epochs={epochs}',
               f'train_cfg.val_interval={val_interval}', 'default_hooks.checkpoint.interval=1',
               'default_hooks.checkpoint.max_keep_ckpts=10', 'default_hooks.logger.interval=1',
               'param_scheduler.1.end=4', 'param_scheduler.1.T_max=4', 'model.neck.1.num_blocks=1'])


def tiny_shapes(tmp_path_factory, train: int, max_side: int):
    """A tiny generated demo data set (``train`` training and 4 val images) in a temporary folder."""
    from mmdet_dyhead.demo_data import write_split
    root = tmp_path_factory.mktemp('shapes')
    write_split(str(root), 'train', train, 0, max_side=max_side)
    write_split(str(root), 'val', 4, 1, max_side=max_side)
    return root
