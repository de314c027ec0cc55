from . import deform_conv_export  # noqa: F401  (registers the op that ONNX export traces)
from .deform_conv import (
    group_view,
    modulated_deform_conv2d,
    modulated_deform_conv2d_groups,
    modulated_deform_conv2d_levels,
)

__all__ = ['group_view', 'modulated_deform_conv2d', 'modulated_deform_conv2d_groups',
           'modulated_deform_conv2d_levels']
