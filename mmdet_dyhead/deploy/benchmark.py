"""CPU latency of a detector in each runtime: PyTorch (our kernel, mmcv's), onnxruntime, OpenVINO.

One process, batch 1, the runs of all variants alternating (each round runs every variant once),
median per variant; predict on a preprocessed image, so decoding and NMS (mmdet's, the same code in
every variant) are included. ``tools/benchmark_deploy.py`` is the command line.
"""
import copy
import statistics
import tempfile
from typing import Dict, List, Optional

import torch

from ..utils.build import build_detector, num_classes_of, offsets_off_zero, synthetic_batch
from ..utils.timing import time_predict_alternating
from .export import export
from .kernel_bound import describe, openvino_bound, openvino_node_times
from .runtime import attach

# (name, DynamicHead config, baseline config, H, W); {head} is filled in from the config
MODELS = {
    'demo': ('demo ATSS-R18/2 at 320x320 (DynamicHead: {head})',
             'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py',
             'configs/demo/atss_r18_fpn_16e_shapes.py', 320, 320),
    'coco': ('COCO ATSS-R50 at 800x1344 (DynamicHead: {head})',
             'configs/atss_r50_fpn_dyhead_1x_coco.py',
             'mmdet::atss/atss_r50_fpn_1x_coco.py', 800, 1344),
}
VARIANTS = ('pytorch, our kernel', "pytorch, mmcv's kernel", 'onnxruntime', 'openvino')
# seconds of rest before each timed call: the runtimes' spinning worker threads wind down
PAUSE = 0.5


def _setting(module_cfg, key: str):
    """A module config's ``key``, or the registered class's default where the config omits it."""
    import inspect

    from mmdet.registry import MODELS as REGISTRY
    if key in module_cfg:
        return module_cfg[key]
    return inspect.signature(REGISTRY.get(module_cfg['type'])).parameters[key].default


def describe_head(cfg) -> str:
    """'4 blocks of 64 ch', '3 blocks of 64 ch + 1 stacked conv per task': what a config's
    DynamicHead and the head convs kept after it are."""
    dy = next(n for n in cfg.model.neck if n['type'] == 'DynamicHead')
    blocks, convs = _setting(dy, 'num_blocks'), _setting(cfg.model.bbox_head, 'stacked_convs')
    out = f'{blocks} block{"s" * (blocks != 1)} of {_setting(dy, "out_channels")} ch'
    return out + (f' + {convs} stacked conv{"s" * (convs != 1)} per task' if convs else '')


def _config(path: str):
    """A config file, also one of mmdet's own (``mmdet::atss/...``)."""
    from mmengine.config import Config
    if path.startswith('mmdet::'):
        import os.path as osp

        import mmdet
        path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', path[len('mmdet::'):])
    return Config.fromfile(path)


def _variants(config: str, h: int, w: int, tmp: str, dyhead: bool, seed: int = 0) -> Dict:
    cfg = _config(config)
    torch.manual_seed(seed)
    model = offsets_off_zero(build_detector(cfg).eval())
    out = {'pytorch, our kernel': model}
    if dyhead:
        mm = copy.deepcopy(model)
        mm.neck[1].dcn_impl = 'mmcv'
        out["pytorch, mmcv's kernel"] = mm
    for backend in ('onnxruntime', 'openvino'):
        folder = f'{tmp}/{backend}'
        export(model, cfg, folder, backend, shape=(h, w))
        out[backend] = attach(build_detector(cfg), folder, backend)
    return cfg, out


def benchmark(key: str, rounds: int = 5, warmup: int = 1,
              variants: Optional[List[str]] = None, bound: bool = False) -> Dict:
    """Milliseconds (median over ``rounds``) per variant, for the DynamicHead model and its
    stacked-conv baseline; ``variants`` limits which run. With ``bound``, also OpenVINO's
    per-node profile of both exports and the lowest ratio its kernels allow
    (``kernel_bound.openvino_bound``)."""
    label, dyhead_cfg, base_cfg, h, w = MODELS[key]
    result = dict(model=label.format(head=describe_head(_config(dyhead_cfg))), size=[h, w],
                  rounds=rounds, rows={})
    node_times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, dyhead in (('DynamicHead', dyhead_cfg, True),
                                     ('4 stacked convs', base_cfg, False)):
            cfg, models = _variants(config, h, w, f'{tmp}/{name[0]}', dyhead)
            models = {k: v for k, v in models.items() if variants is None or k in variants}
            batch = synthetic_batch(1, h, w, num_classes_of(cfg))
            data = next(iter(models.values())).data_preprocessor(batch, False)
            times = time_predict_alternating(models, {k: data for k in models}, rounds, warmup,
                                             pause=PAUSE)
            result['rows'][name] = {k: round(statistics.median(v) * 1000, 1)
                                    for k, v in times.items()}
            if bound and 'openvino' in models:
                node_times[name] = openvino_node_times(f'{tmp}/{name[0]}/openvino',
                                                       data['inputs'], rounds)
    if len(node_times) == 2:
        result['openvino_bound'] = openvino_bound(
            node_times['DynamicHead'], node_times['4 stacked convs'],
            result['rows']['4 stacked convs']['openvino'])
    return result


def table(results: List[Dict]) -> str:
    """Markdown: one row per model and head, one column per variant, and DynamicHead's latency
    over the stacked convs' in the fastest backend; then, where measured, the lowest ratio
    OpenVINO's kernels allow (``kernel_bound``)."""
    lines = ['| model | head | ' + ' | '.join(VARIANTS) + ' | fastest: DynamicHead / stacked |',
             '| --- ' * (len(VARIANTS) + 3) + '|']
    for r in results:
        dy, base = r['rows']['DynamicHead'], r['rows']['4 stacked convs']
        best = min(dy, key=dy.get)
        ratio = dy[best] / min(base.values())
        for head, row in (('DynamicHead', dy), ('4 stacked convs', base)):
            cells = [f'{row[v]:.1f} ms' if v in row else '-' for v in VARIANTS]
            extra = f'{ratio:.2f}x ({best})' if head == 'DynamicHead' else ''
            lines.append(f'| {r["model"]} | {head} | ' + ' | '.join(cells) + f' | {extra} |')
    text = '\n'.join(lines) + '\n'
    for r in results:
        if 'openvino_bound' in r:
            text += f'\n{r["model"]}: ' + describe(r['openvino_bound']) + '\n'
    return text
