"""Export a detector with DynamicHead to ONNX for onnxruntime or OpenVINO (``tools/deploy.py``).

Writes, in the output folder, one ONNX file per part (``parts.py``), ``deploy.json`` (backend,
input size, each part's inputs, outputs and output structure) and ``config.py`` (the config, so
the folder is all ``tools/test.py --backend`` and ``tools/infer.py --backend`` need).
"""
import json
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from . import parts as P
from .symbolic import CUSTOM_OPSETS, OPSET, check_backend, onnx_backend


def test_input_size(cfg) -> Tuple[int, int]:
    """(H, W) the test pipeline resizes to, rounded up to the preprocessor's pad divisor."""
    pipeline = cfg.test_dataloader.dataset.pipeline
    resize = next((t for t in pipeline if t['type'].split('.')[-1] == 'Resize'), None)
    if resize is None:
        raise ValueError('the config has no Resize in its test pipeline; give --shape H W')
    scale = resize['scale']
    w, h = (scale, scale) if isinstance(scale, int) else scale
    if resize.get('keep_ratio', False):  # mmdet: the long edge to max(scale), the short to min
        h, w = min(h, w), max(h, w)
    div = int(cfg.model.data_preprocessor.get('pad_size_divisor', 1) or 1)
    return -(-h // div) * div, -(-w // div) * div


def check_shape(cfg, shape: Sequence[int]) -> Tuple[int, int]:
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f'--shape takes H W, two positive ints, got {list(shape)}')
    h, w = (int(s) for s in shape)
    div = int(cfg.model.data_preprocessor.get('pad_size_divisor', 1) or 1)
    if h % div or w % div:
        raise ValueError(f'--shape {h} {w}: the config pads images to multiples of {div} '
                         f'(data_preprocessor.pad_size_divisor); use multiples of {div}')
    return h, w


def _names(prefix: str, n: int):
    return [f'{prefix}{i}' for i in range(n)]


def export(model: nn.Module, cfg, out_dir: str, backend: str, shape: Optional[Sequence[int]] = None,
           dynamic: bool = False, batch: int = 1, checkpoint: Optional[str] = None) -> Dict:
    """Exports ``model`` (eval mode, on the CPU) part by part; returns the ``deploy.json`` dict."""
    check_backend(backend)
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    h, w = check_shape(cfg, shape) if shape is not None else test_input_size(cfg)
    model = model.cpu().eval()
    os.makedirs(out_dir, exist_ok=True)
    fns = P.part_functions(model)
    image = torch.randn(batch, 3, h, w)
    meta = dict(backend=backend, kind=P.kind(model), opset=OPSET, dynamic=dynamic,
                input_shape=[batch, 3, h, w], checkpoint=checkpoint, torch=torch.__version__,
                parts={})
    with torch.no_grad():
        feats = fns['features'](image)
    examples = {'features': (image,), 'bbox_head': feats, 'rpn_head': feats}
    roi = _roi_examples(model, feats)
    examples.update(roi)
    for name, fn in fns.items():
        inputs = examples[name]
        with torch.no_grad():
            flat, structure = P.flatten(fn(*inputs))
        in_names = ['image'] if name == 'features' else (
            ['rois'] if name.startswith('roi_') else _names('level', len(inputs)))
        out_names = _names('out', len(flat))
        axes = {}
        if name.startswith('roi_'):  # the number of RoIs always varies
            axes = {n: {0: 'rois'} for n in in_names + out_names}
        elif dynamic:
            axes = {n: {0: 'batch', 2: f'{n}_h', 3: f'{n}_w'} for n in in_names}
            axes.update({n: {0: 'batch'} for n in out_names})
        _write_onnx(P.Traced(fn, model), inputs, osp.join(out_dir, f'{name}.onnx'), backend,
                    in_names, out_names, axes or None)
        meta['parts'][name] = dict(file=f'{name}.onnx', inputs=in_names, outputs=out_names,
                                   structure=structure)
    cfg.dump(osp.join(out_dir, 'config.py'))
    with open(osp.join(out_dir, 'deploy.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def _roi_examples(model, feats) -> Dict[str, tuple]:
    """Example RoI features for the RoI heads: 8 boxes through the config's own extractors."""
    if P.kind(model) != 'two-stage':
        return {}
    from mmdet.structures.bbox import bbox2roi
    h, w = feats[0].shape[-2:]
    stride = model.roi_head.bbox_roi_extractor.featmap_strides[0]
    boxes = torch.tensor([[0., 0., 16., 16.], [8., 8., 64., 48.]]).repeat(4, 1)
    boxes[:, 2:] = torch.minimum(boxes[:, 2:], torch.tensor([w * stride, h * stride]) - 1)
    rois = bbox2roi([boxes])
    out = {}
    with torch.no_grad():
        ext = model.roi_head.bbox_roi_extractor
        out['roi_bbox_head'] = (ext(feats[:ext.num_inputs], rois),)
        if getattr(model.roi_head, 'with_mask', False):
            ext = model.roi_head.mask_roi_extractor
            out['roi_mask_head'] = (ext(feats[:ext.num_inputs], rois),)
    return out


def export_module(module: nn.Module, inputs: Sequence[torch.Tensor], path: str, backend: str,
                  dynamic: bool = False) -> str:
    """One module (e.g. a ``DynamicHead`` alone: its inputs are the pyramid's maps) to one ONNX
    file, inputs ``input{i}``, outputs ``output{i}``; ``dynamic``: batch, H and W of every input."""
    check_backend(backend)

    class _Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = module

        def forward(self, *xs):
            out = self.module(list(xs)) if len(xs) > 1 else self.module(xs[0])
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    wrapper = _Flat().eval()
    with torch.no_grad():
        n_out = len(wrapper(*inputs))
    in_names, out_names = _names('input', len(inputs)), _names('output', n_out)
    axes = ({n: {0: 'batch', 2: f'{n}_h', 3: f'{n}_w'} for n in in_names} if dynamic else None)
    _write_onnx(wrapper, inputs, path, backend, in_names, out_names, axes)
    return path


def _write_onnx(module: nn.Module, inputs, path: str, backend: str, in_names, out_names, axes):
    """The one export call: TorchScript exporter, opset 19, deformable convs as ``backend``'s op."""
    with onnx_backend(backend), torch.no_grad():
        # eval(): the exporter restores the wrapper's mode afterwards, and with it the model's
        torch.onnx.export(module.eval(), tuple(inputs), path, dynamo=False, opset_version=OPSET,
                          custom_opsets=CUSTOM_OPSETS[backend], input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, do_constant_folding=True)
