"""The machine a figure was measured on, read once from /proc/cpuinfo."""
import functools
import os
import re

import torch


@functools.lru_cache(maxsize=None)
def cpuinfo_field(name: str) -> str:
    """The first value of ``name`` in /proc/cpuinfo ('model name', 'flags', ...), or ''."""
    try:
        with open('/proc/cpuinfo') as f:
            m = re.search(rf'^{re.escape(name)}\s*:\s*(.*)$', f.read(), re.M)
    except OSError:
        return ''
    return m.group(1).strip() if m else ''


def machine_name(device: str = 'cpu') -> str:
    """CPU model and threads, or the GPU, with the torch version: for the tables' captions."""
    if device.startswith('cuda'):
        return f'{torch.cuda.get_device_name()}, torch {torch.__version__}'
    cpu = cpuinfo_field('model name') or 'CPU'
    return (f'{torch.get_num_threads()} threads on {os.cpu_count()} cores of {cpu}, '
            f'torch {torch.__version__}')
