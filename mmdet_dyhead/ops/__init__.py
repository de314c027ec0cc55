from .deform_conv import modulated_deform_conv2d

__all__ = ['modulated_deform_conv2d']
