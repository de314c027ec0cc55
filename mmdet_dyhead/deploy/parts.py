"""A detector as the parts that go into ONNX graphs, and how their outputs nest.

Every learned part of an mmdet detector is a graph of its own; what lies between them (prior
boxes, decoding, NMS, RoIAlign of the proposals, mask pasting) stays mmdet's own Python code, so
an exported detector post-processes exactly as the PyTorch one:

    one-stage  (ATSS, FCOS, RetinaNet)  features: image -> pyramid; bbox_head: pyramid -> outputs
    two-stage  (Faster / Mask R-CNN)    features; rpn_head: pyramid -> outputs;
                                        roi_bbox_head: RoI features (R, C, 7, 7) -> scores, deltas;
                                        roi_mask_head: RoI features (R, C, 14, 14) -> mask logits
"""
from typing import Callable, Dict, List, Sequence, Tuple

from torch import Tensor, nn


def kind(model: nn.Module) -> str:
    if hasattr(model, 'roi_head') and hasattr(model, 'rpn_head'):
        return 'two-stage'
    if hasattr(model, 'bbox_head'):
        return 'one-stage'
    raise ValueError(f'{type(model).__name__}: only mmdet one-stage detectors (bbox_head) and '
                     f'two-stage ones (rpn_head + roi_head) can be exported')


def part_functions(model: nn.Module) -> Dict[str, Callable]:
    """name -> the callable that PyTorch runs for that part (its graph's contents)."""
    parts = {'features': lambda image: tuple(model.extract_feat(image))}
    if kind(model) == 'one-stage':
        parts['bbox_head'] = lambda *feats: model.bbox_head(tuple(feats))
    else:
        parts['rpn_head'] = lambda *feats: model.rpn_head(tuple(feats))
        parts['roi_bbox_head'] = lambda rois: model.roi_head.bbox_head(rois)
        if getattr(model.roi_head, 'with_mask', False):
            parts['roi_mask_head'] = lambda rois: model.roi_head.mask_head(rois)
    return parts


def flatten(out) -> Tuple[List[Tensor], List]:
    """A head's output (a tensor, or a tuple of tensors and per-level lists) -> the flat list of
    tensors and the structure that ``unflatten`` rebuilds it from: 'tensor', or per element
    'tensor' or the length of its list."""
    if isinstance(out, Tensor):
        return [out], 'tensor'
    flat, structure = [], []
    for item in out:
        if isinstance(item, Tensor):
            flat.append(item)
            structure.append('tensor')
        else:
            flat.extend(item)
            structure.append(len(item))
    return flat, structure


def unflatten(flat: Sequence[Tensor], structure):
    if structure == 'tensor':
        return flat[0]
    out, i = [], 0
    for item in structure:
        if item == 'tensor':
            out.append(flat[i])
            i += 1
        else:
            out.append(list(flat[i:i + item]))
            i += item
    return tuple(out)


class Traced(nn.Module):
    """A part as a module of tensors in, a flat tuple of tensors out (what the exporter traces)."""

    def __init__(self, fn: Callable, model: nn.Module):
        super().__init__()
        self.fn, self.model = fn, model  # the model as a child: its weights become initializers

    def forward(self, *inputs):
        return tuple(flatten(self.fn(*inputs))[0])
