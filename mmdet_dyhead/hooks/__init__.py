"""Training hooks, registered in mmdet's ``HOOKS`` when ``mmdet_dyhead`` is imported."""
from .learning_curve import LearningCurveHook, plot_learning_curve
from .rng_state import RNGStateHook

__all__ = ['LearningCurveHook', 'RNGStateHook', 'plot_learning_curve']
