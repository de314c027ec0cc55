from .deform_conv import modulated_deform_conv2d, modulated_deform_conv2d_levels

__all__ = ['modulated_deform_conv2d', 'modulated_deform_conv2d_levels']
