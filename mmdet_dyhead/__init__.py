"""DyHead (Dai et al., CVPR 2021) for MMDetection 3.x.

Importing this package registers ``DynamicHead`` in ``mmdet.registry.MODELS``; configs load it
with ``custom_imports=dict(imports=['mmdet_dyhead'], allow_failed_imports=False)``. Importing it also
makes mmengine's checkpoints load on torch >= 2.6 (``mmdet_dyhead.checkpoint``).
"""
from . import amp, checkpoint, hooks  # noqa: F401  (registers CPUAutocastOptimWrapper and the hooks)
from .models import (
    DynamicHead,
    DynamicHeadBlock,
    ScaleAwareAttention,
    SpatialAwareAttention,
    TaskAwareAttention,
    TaskAwareBBoxHead,
)

# mmengine 0.10.7 cannot load its own checkpoints on torch >= 2.6; see checkpoint.py
checkpoint.register()

__version__ = '0.1.0'
__all__ = ['DynamicHead', 'DynamicHeadBlock', 'ScaleAwareAttention', 'SpatialAwareAttention',
           'TaskAwareAttention', 'TaskAwareBBoxHead']
