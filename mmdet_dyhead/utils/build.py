"""Detectors from configs, and synthetic batches to feed them (CPU or GPU)."""
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict


def build_detector(cfg: Config, device: str = 'cpu', checkpoint: Optional[str] = None):
    """The config's model on ``device``, with the backbone's pretrained init left out (no network)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmdet_dyhead  # noqa: F401

    from ..config_check import check_model_cfg
    model_cfg = ConfigDict(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else cfg.model)
    check_model_cfg(model_cfg)
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    model.init_weights()
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device)


def offsets_off_zero(model: torch.nn.Module, std: float = 0.01) -> torch.nn.Module:
    """Every DynamicHead offset conv's weight drawn from N(0, std), in place: a freshly built
    neck starts its offsets at zero (plain 3x3 taps), so timings and export checks would never
    sample off the grid, as a trained model does. Returns ``model``."""
    from ..models.attentions import SpatialAwareAttention
    for m in model.modules():
        if isinstance(m, SpatialAwareAttention) and m.offset_conv is not None:
            torch.nn.init.normal_(m.offset_conv.weight, 0, std)
    return model


def synthetic_batch(batch_size: int, height: int, width: int, num_classes: int, seed: int = 0,
                    with_mask: bool = False):
    """A packed batch (images, boxes and, ``with_mask``, instance masks) as a dataloader gives it."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(batch_size, [[3, height, width]] * batch_size, num_items=[5] * batch_size,
                          num_classes=num_classes, with_mask=with_mask)


def has_mask_head(cfg: Config) -> bool:
    """Whether the config's detector predicts instance masks (Mask R-CNN and the like)."""
    roi_head = cfg.model.get('roi_head') or {}
    return bool(roi_head.get('mask_head'))


def num_classes_of(cfg: Config) -> int:
    head = cfg.model.get('bbox_head') or cfg.model.roi_head.bbox_head
    return head['num_classes'] if isinstance(head, dict) else head[0]['num_classes']
