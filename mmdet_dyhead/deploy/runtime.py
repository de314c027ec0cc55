"""Run an exported detector: the PyTorch detector of its config, with each learned part replaced
by a session of the runtime, so mmdet's own code does everything between the parts (decoding,
NMS, RoIAlign, masks) and every mmdet tool that calls ``test_step`` or ``predict`` works as with a
checkpoint (``tools/test.py --backend``, ``tools/infer.py --backend``).
"""
import json
import os.path as osp
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import parts as P
from .openvino_passes import fold_border_pads
from .symbolic import check_backend

INSTALL = {'onnxruntime': 'pip install onnxruntime==1.31.1',
           'openvino': 'pip install openvino==2026.4.1', 'onnx': 'pip install onnx==1.23.2'}


def require(backend: str, export: bool = False):
    """The runtime's module (and for ``export`` the onnx package the exporter writes with), or
    a SystemExit that says what to install."""
    import importlib
    check_backend(backend)
    for name in ([backend] + (['onnx'] if export else [])):
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise SystemExit(f'--backend {backend} needs the {name} package ({e}); install it '
                             f'with `{INSTALL[name]}` (make setup does)') from e
        if name == backend:
            runtime = module
    return runtime


class Session:
    """One ONNX graph in a runtime: ``session(*tensors)`` -> list of tensors (CPU, fp32)."""

    def __init__(self, path: str, backend: str, inputs: List[str], outputs: List[str],
                 threads: int = 0, profile: bool = False):
        rt = require(backend)
        self.backend, self.inputs, self.outputs = backend, inputs, outputs
        if backend == 'onnxruntime':
            opts = rt.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self.sess = rt.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        else:
            core = rt.Core()
            # fp32: OpenVINO's CPU plugin would otherwise run in bf16 on CPUs that have it
            config = {'INFERENCE_PRECISION_HINT': 'f32'}
            if threads:
                config['INFERENCE_NUM_THREADS'] = threads
            if profile:  # OpenVINO's per-node times of each inference (node_times)
                config['PERF_COUNT'] = 'YES'
            graph = core.read_model(path)
            fold_border_pads(graph)  # the same math, faster (openvino_passes.py)
            self.sess = core.compile_model(graph, 'CPU', config)
            self.request = self.sess.create_infer_request()

    def __call__(self, *tensors: Tensor) -> List[Tensor]:
        arrays = [np.ascontiguousarray(t.detach().cpu().float().numpy()) for t in tensors]
        if self.backend == 'onnxruntime':
            outs = self.sess.run(self.outputs, dict(zip(self.inputs, arrays)))
        else:
            res = self.request.infer(arrays)
            outs = [res[o] for o in self.sess.outputs]
        return [torch.from_numpy(np.array(o)) for o in outs]

    def node_times(self) -> Dict[str, float]:
        """OpenVINO, made with ``profile=True``: milliseconds per node type in the last call."""
        out: Dict[str, float] = {}
        for info in self.request.profiling_info:
            ms = info.real_time.total_seconds() * 1000
            out[info.node_type] = out.get(info.node_type, 0.0) + ms
        return out


def read_meta(deploy_dir: str) -> Dict:
    path = osp.join(deploy_dir, 'deploy.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{deploy_dir} is not an exported model (no deploy.json); '
                                f'make one with tools/deploy.py CONFIG CHECKPOINT --out DIR')
    with open(path) as f:
        return json.load(f)


def attach(model: nn.Module, deploy_dir: str, backend: str = None, threads: int = 0) -> nn.Module:
    """Replaces ``model``'s learned parts by the runtime sessions of ``deploy_dir`` (in place);
    returns the model (eval mode). ``backend`` must match the export, if given."""
    meta = read_meta(deploy_dir)
    if backend is not None and backend != meta['backend']:
        raise ValueError(f'{deploy_dir} was exported for {meta["backend"]}, not {backend}: '
                         f'export again with --backend {backend}')
    if P.kind(model) != meta['kind']:
        raise ValueError(f'{deploy_dir} holds a {meta["kind"]} detector, the config a '
                         f'{P.kind(model)} one')
    missing = set(P.part_functions(model)) ^ set(meta['parts'])
    if missing:
        raise ValueError(f'{deploy_dir} does not fit the config: parts {sorted(missing)} differ')
    sessions = {name: Session(osp.join(deploy_dir, p['file']), meta['backend'], p['inputs'],
                              p['outputs'], threads)
                for name, p in meta['parts'].items()}
    structure = {name: p['structure'] for name, p in meta['parts'].items()}
    fixed = None if meta['dynamic'] else meta['input_shape']

    def features(image: Tensor):
        return tuple(_fixed_size(sessions['features'], image, fixed))

    def head(name):
        def forward(*x):
            x = x[0] if len(x) == 1 and isinstance(x[0], (tuple, list)) else x
            if name.startswith('roi_') and x[0].shape[0] == 0:  # no RoIs: nothing to run
                return original[name](*x)
            flat = _per_batch(sessions[name], list(x), fixed, roi=name.startswith('roi_'))
            return P.unflatten(flat, structure[name])
        return forward

    targets = {'bbox_head': 'bbox_head', 'rpn_head': 'rpn_head',
               'roi_bbox_head': 'roi_head.bbox_head', 'roi_mask_head': 'roi_head.mask_head'}
    original = {}
    model.extract_feat = features
    for name in sessions:
        if name == 'features':
            continue
        module = model.get_submodule(targets[name])
        original[name] = module.forward
        module.forward = head(name)
    model.deployed = dict(dir=deploy_dir, **{k: meta[k] for k in ('backend', 'dynamic',
                                                                  'input_shape')})
    return model.eval()


def _fixed_size(session, image: Tensor, fixed) -> List[Tensor]:
    """A fixed-size export gets the image padded bottom-right with zeros to its size (as mmdet
    pads a batch: boxes keep their coordinates)."""
    if fixed is None:
        return session(image)
    h, w = image.shape[-2:]
    fh, fw = fixed[2:]
    if h > fh or w > fw:
        raise ValueError(f'the model was exported for {fh}x{fw} inputs; this batch is {h}x{w}: '
                         f'export with a larger --shape, or --dynamic')
    return _per_batch(session, [F.pad(image, (0, fw - w, 0, fh - h))], fixed)


def _per_batch(session, x: List[Tensor], fixed, roi: bool = False) -> List[Tensor]:
    """A fixed-size export runs a batch of another size in slices of its own batch size."""
    if roi or fixed is None or x[0].shape[0] == fixed[0]:
        return session(*x)
    fb, n = fixed[0], x[0].shape[0]
    if n % fb:
        raise ValueError(f'the model was exported for batch {fb}; batch {n} is not a multiple '
                         f'of it: export with --batch, or --dynamic')
    outs = [session(*(t[i:i + fb] for t in x)) for i in range(0, n, fb)]
    return [torch.cat(o) for o in zip(*outs)]


def DeployedDetector(detector: dict, deploy_dir: str, backend: str = None, threads: int = 0,
                     data_preprocessor: dict = None):
    """Registered in mmdet's MODELS: ``model=dict(type='DeployedDetector', detector=<the config's
    model>, deploy_dir=DIR, backend=...)`` builds the detector and attaches DIR's sessions, so a
    Runner tests an export exactly as it tests a checkpoint (``tools/test.py --backend``).
    ``data_preprocessor`` (what a Runner passes from the config's top level) goes to the detector
    where its own config has none, as the Runner would do for the detector."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    detector = dict(detector)
    if data_preprocessor is not None:
        detector.setdefault('data_preprocessor', data_preprocessor)
    model = MODELS.build(detector)
    return attach(model, deploy_dir, backend, threads)


def register():
    from mmdet.registry import MODELS
    if 'DeployedDetector' not in MODELS.module_dict:
        MODELS.register_module(name='DeployedDetector', module=DeployedDetector)
