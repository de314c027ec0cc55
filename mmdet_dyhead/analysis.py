"""Building detectors from configs, synthetic batches, timing and FLOPs, for tools/ (CPU or GPU).

FLOPs follow mmdet's convention (one multiply-add counts as one FLOP) and, unlike mmdet's
get_flops.py, include the modulated deformable convolutions: each counts as a conv of the same
shape, N * C_out * H_out * W_out * C_in * k * k (the bilinear sampling is not counted).
"""
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict

DCN_OPS = ('prim::PythonOp.ModulatedDeformConv2dFunction',)


def build_detector(cfg: Config, device: str = 'cpu', checkpoint: Optional[str] = None):
    """The config's model on ``device``, with the backbone's pretrained init left out (no network)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmdet_dyhead  # noqa: F401
    from .config_check import check_model_cfg
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


def synthetic_batch(batch_size: int, height: int, width: int, num_classes: int, seed: int = 0):
    """A packed batch (images and boxes) as a dataloader would give it."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(batch_size, [[3, height, width]] * batch_size, num_items=[5] * batch_size,
                          num_classes=num_classes, with_mask=False)


def num_classes_of(cfg: Config) -> int:
    head = cfg.model.get('bbox_head') or cfg.model.roi_head.bbox_head
    return head['num_classes'] if isinstance(head, dict) else head[0]['num_classes']


def _sync(device: str):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_inference(model, batch, device: str, iters: int, warmup: int) -> List[float]:
    """Seconds per batch of predict (preprocessing and post-processing included)."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            _sync(device)
            t0 = time.perf_counter()
            model(**model.data_preprocessor(batch, False), mode='predict')
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def time_train_iter(model, batch, device: str, iters: int, warmup: int) -> List[float]:
    """Seconds per training iteration: loss, backward and an SGD step."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        losses = model(**model.data_preprocessor(batch, True), mode='loss')
        loss = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _dcn_flop_jit(inputs, outputs) -> int:
    from mmengine.analysis.jit_handles import get_shape
    # mmcv's op (DynamicHead runs it under jit.trace): apply(x, offset, mask, weight, bias, ...)
    w, (n, cout, ho, wo) = get_shape(inputs[3]), get_shape(outputs[0])
    return n * cout * ho * wo * w[1] * w[2] * w[3]


def count_flops(model, height: int, width: int, device: str = 'cpu') -> Dict[str, float]:
    """FLOPs (multiply-adds) and parameters of one image's forward, deformable convs included."""
    from mmengine.analysis import FlopAnalyzer, parameter_count
    batch = synthetic_batch(1, height, width, 2)  # mmdet's helper needs 2+ classes
    data = model.data_preprocessor(batch, False)
    model.eval()

    class _Tensor(torch.nn.Module):  # trace the tensor-mode forward of mmdet
        def __init__(self, det, samples):
            super().__init__()
            self.det, self.samples = det, samples

        def forward(self, x):
            return self.det._forward(x, self.samples)

    wrapper = _Tensor(model, data['data_samples'])
    analyzer = FlopAnalyzer(wrapper, (data['inputs'],))
    for op in DCN_OPS:
        analyzer.set_op_handle(op, _dcn_flop_jit)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total = analyzer.total()
    by_module = analyzer.by_module()
    unsupported = dict(analyzer.unsupported_ops())
    return dict(flops=total, neck_flops=by_module.get('det.neck', 0),
                neck_modules={k[len('det.'):]: v for k, v in by_module.items()
                              if k.count('.') == 2 and k.startswith('det.neck.')},
                params=parameter_count(model)[''], unsupported=unsupported)


def summarize(times: Sequence[float]) -> Tuple[float, float]:
    """Median and interquartile range."""
    if len(times) < 2:
        return times[0], 0.0
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]


def machine_name(device: str = 'cpu') -> str:
    """The machine a figure was measured on, for tables: CPU model and threads, or the GPU."""
    import os
    import re
    if device.startswith('cuda'):
        return f'{torch.cuda.get_device_name()}, torch {torch.__version__}'
    cpu = 'CPU'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = re.search(r'model name\s*:\s*(.*)', f.read()).group(1).strip()
    except (OSError, AttributeError):
        pass
    return (f'{torch.get_num_threads()} threads on {os.cpu_count()} cores of {cpu}, '
            f'torch {torch.__version__}')
