from .attentions import LevelMean, ScaleAwareAttention, SpatialAwareAttention, TaskAwareAttention
from .deform_conv_norm import DeformConvNorm
from .dynamic_head import DynamicHead, DynamicHeadBlock
from .roi_head import TaskAwareBBoxHead

__all__ = ['ScaleAwareAttention', 'SpatialAwareAttention', 'TaskAwareAttention', 'LevelMean',
           'DeformConvNorm', 'DynamicHeadBlock', 'DynamicHead', 'TaskAwareBBoxHead']
