"""DyHead (Dai et al., CVPR 2021) for MMDetection 3.x.

Importing this package registers ``DynamicHead`` in ``mmdet.registry.MODELS``; configs load it
with ``custom_imports=dict(imports=['mmdet_dyhead'], allow_failed_imports=False)``.
"""
from .models import (DynamicHead, DynamicHeadBlock, ScaleAwareAttention, SpatialAwareAttention,
                     TaskAwareAttention)

__version__ = '0.1.0'
__all__ = ['DynamicHead', 'DynamicHeadBlock', 'ScaleAwareAttention', 'SpatialAwareAttention',
           'TaskAwareAttention']
