"""Loading mmengine checkpoints on torch >= 2.6 without running arbitrary pickles.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7 calls ``torch.load``
without the argument, and its checkpoints hold ``HistoryBuffer`` objects and numpy arrays, so
``tools/test.py CKPT``, ``--resume`` and ``load_from`` fail. Importing ``mmdet_dyhead`` registers
``load_local_checkpoint`` as mmengine's loader for local files: it keeps ``weights_only=True`` and
allows, for that call only, the few classes mmengine's own checkpoints need. A file that needs
anything else (for example a pickle crafted to run code) is refused with ``UntrustedCheckpointError``.

To load a file you trust that holds other objects, set ``MMDET_DYHEAD_TRUST_CHECKPOINTS=1`` (all
files) or pass ``trust=True`` to ``load_local_checkpoint``.
"""
import os
import os.path as osp
import pickle
import re
from typing import Any, List

import numpy as np
import torch

TRUST_ENV = 'MMDET_DYHEAD_TRUST_CHECKPOINTS'


class UntrustedCheckpointError(RuntimeError):
    """The checkpoint holds objects outside the allow-list and was not loaded."""


def _history_buffer_getattr(obj, name: str):
    """The one ``getattr`` mmengine's pickles use: a public method of ``HistoryBuffer`` (its
    statistics table stores ``HistoryBuffer.min`` and the like). Anything else is refused."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and not name.startswith('_') and \
            callable(getattr(HistoryBuffer, name, None)):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def allowed_globals() -> List[Any]:
    """Classes and functions that mmengine/mmdet checkpoints need, beyond tensors and containers."""
    from mmengine.logging import HistoryBuffer
    reconstruct = np._core.multiarray._reconstruct if hasattr(np, '_core') else \
        np.core.multiarray._reconstruct
    scalar = np._core.multiarray.scalar if hasattr(np, '_core') else np.core.multiarray.scalar
    names = [HistoryBuffer, np.ndarray, np.dtype, reconstruct, scalar,
             (_history_buffer_getattr, 'builtins.getattr'),
             # pickles written with numpy 1.x name the module numpy.core
             (reconstruct, 'numpy.core.multiarray._reconstruct'),
             (scalar, 'numpy.core.multiarray.scalar')]
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float64DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        names += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return names


def load_local_checkpoint(filename: str, map_location=None, trust: bool = None):
    """``torch.load`` of a local file with weights_only=True and the mmengine allow-list."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if trust is None:
        trust = os.environ.get(TRUST_ENV, '') == '1'
    if trust:
        return torch.load(filename, map_location=map_location, weights_only=False)
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r'(Unsupported global: GLOBAL \S+|Trying to call reduce for '
                              r'unrecognized function \S+|getattr\(.*?\) is not allowed)', str(e))
            reason = found.group(1) if found else type(e).__name__
            raise UntrustedCheckpointError(
                f'refused to load {filename}: it holds objects that are neither weights nor '
                f'mmengine training state, and unpickling them could run code ({reason}). '
                f'If you trust this file, set {TRUST_ENV}=1 or call '
                f'mmdet_dyhead.checkpoint.load_local_checkpoint(path, trust=True).') from e


def register():
    """Make ``load_local_checkpoint`` mmengine's loader for local paths (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


def check_matches(model, path: str):
    """Raise a ValueError naming the missing, unexpected and mis-shaped keys if the checkpoint at
    ``path`` does not fit ``model`` (mmengine's loader only warns, and would leave those weights
    at their initial values)."""
    from mmengine.model import is_model_wrapper
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
        raise ValueError('\n'.join(lines))
