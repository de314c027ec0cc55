from . import deform_conv_export  # noqa: F401  (registers the op that ONNX export traces)
from .deform_conv import modulated_deform_conv2d, modulated_deform_conv2d_levels

__all__ = ['modulated_deform_conv2d', 'modulated_deform_conv2d_levels']
