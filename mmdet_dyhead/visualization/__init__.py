"""Pictures of what DynamicHead's attentions do (``tools/visualize_attention.py``)."""
from .draw import draw_scale, draw_spatial, draw_task, scale_table
from .recorder import (
    AttentionRecorder,
    BlockRecord,
    Samples,
    find_neck,
    sample_points,
    strongest_positions,
)

__all__ = ['AttentionRecorder', 'BlockRecord', 'Samples', 'draw_scale', 'draw_spatial',
           'draw_task', 'find_neck', 'sample_points', 'scale_table', 'strongest_positions']
