"""RNGStateHook: checkpoints carry the random-number states, so a resumed run is exact."""
import random

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves Python's, numpy's and torch's RNG states with each checkpoint and restores them on
    ``--resume``. mmengine re-seeds a resumed run from the start of its sequence, so random
    augmentations (flips, samplers that use the global RNG) would otherwise differ from an
    uninterrupted run after the resume point."""

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = dict(
            python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if not state:
            return
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state['python']))
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if state.get('cuda') is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
