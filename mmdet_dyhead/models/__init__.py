from .attentions import (DeformConvNorm, LevelMean, ScaleAwareAttention, SpatialAwareAttention,
                         TaskAwareAttention)
from .dynamic_head import DynamicHead, DynamicHeadBlock
from .roi_head import TaskAwareBBoxHead

__all__ = ['ScaleAwareAttention', 'SpatialAwareAttention', 'TaskAwareAttention', 'LevelMean',
           'DeformConvNorm', 'DynamicHeadBlock', 'DynamicHead', 'TaskAwareBBoxHead']
