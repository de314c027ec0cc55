"""--amp on a machine without GPUs: mmengine's AmpOptimWrapper asserts a GPU, so CPUs get this."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """Forward and loss under ``torch.autocast('cpu', dtype)`` (bf16 by default); weights, gradients
    and optimizer steps stay fp32. bf16 keeps fp32's exponent range, so there is no loss scaling."""

    def __init__(self, dtype='bfloat16', **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
