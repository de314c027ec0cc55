"""The paper's two-stage form (Fig. 2c): task-aware attention after RoI pooling.

Scale- and spatial-aware attention run on the pyramid (``DynamicHead(task_aware=False)``); RoIAlign
then cuts each proposal into a (C, 7, 7) map, a small pyramid-free tensor on which the paper applies
task-aware attention in place of the fully connected layers:

    (R, C, 7, 7) --pi_C x num_blocks--> (R, C, 7, 7) --flatten--> fc_cls, fc_reg

Each RoI gets its own dynamic-ReLU coefficients from its own global average, so the channel
activation adapts per proposal, as pi_C adapts per image in one-stage detectors.
"""
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.registry import MODELS
from torch import Tensor, nn

from . import options
from .attentions import TaskAwareAttention


@MODELS.register_module()
class TaskAwareBBoxHead(BBoxHead):
    """mmdet ``BBoxHead`` whose shared FC layers are replaced by task-aware attention.

    Args:
        num_blocks: stacked ``TaskAwareAttention`` on the RoI features (default 1).
        **kwargs: ``BBoxHead`` arguments (in_channels, roi_feat_size, num_classes, bbox_coder,
            losses, ...). ``with_avg_pool`` must stay False: the classifier and regressor read the
            flattened (C * 7 * 7) RoI feature, keeping its layout for box regression.
    """

    def __init__(self, num_blocks: int = 1, **kwargs):
        if kwargs.get('with_avg_pool'):
            raise ValueError('TaskAwareBBoxHead reads the flattened RoI feature; '
                             'with_avg_pool must be False')
        num_blocks = options.positive_int('TaskAwareBBoxHead', 'num_blocks', num_blocks)
        super().__init__(**kwargs)
        self.task = nn.Sequential(*[TaskAwareAttention(self.in_channels)
                                    for _ in range(num_blocks)])

    def forward(self, x: Tensor):
        """(R, C, 7, 7) RoI features -> class scores (R, num_classes + 1), box deltas (R, 4 * k)."""
        return super().forward(self.task(x).flatten(1))
