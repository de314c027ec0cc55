"""FLOPs (multiply-adds, mmdet's convention) and parameters, deformable convs included.

Unlike mmdet's get_flops.py, the modulated deformable convolutions are counted: each as a conv of
the same shape, N * C_out * H_out * W_out * C_in * k * k (the bilinear sampling is not counted).
"""
from typing import Dict

import torch

from .build import synthetic_batch


def _mmcv_dcn_flop_jit(inputs, outputs) -> int:
    """mmcv's op (dcn_impl='mmcv', mmdet's DyHead): apply(x, offset, mask, weight, bias, ...)."""
    from mmengine.analysis.jit_handles import get_shape
    w, (n, cout, ho, wo) = get_shape(inputs[3]), get_shape(outputs[0])
    return n * cout * ho * wo * w[1] * w[2] * w[3]


def _levels_dcn_flop_jit(inputs, outputs) -> int:
    """Ours, ``mmdet_dyhead::deform_conv2d_levels``: (xs, offsets, masks, weight, ...) -> one
    (positions, cout) tensor per group; the traced graph unpacks that list right after."""
    from mmengine.analysis.jit_handles import get_shape
    w = get_shape(inputs[3])
    macs = 0
    for use in outputs[0].uses():
        if use.user.kind() == 'prim::ListUnpack':
            for group in use.user.outputs():
                positions, cout = get_shape(group)
                macs += positions * cout * w[1] * w[2] * w[3]
    return macs


DCN_OP_HANDLES = {'prim::PythonOp.ModulatedDeformConv2dFunction': _mmcv_dcn_flop_jit,
                  'mmdet_dyhead::deform_conv2d_levels': _levels_dcn_flop_jit}


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
    for op, handle in DCN_OP_HANDLES.items():
        analyzer.set_op_handle(op, handle)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total = analyzer.total()
    by_module = analyzer.by_module()
    unsupported = dict(analyzer.unsupported_ops())
    return dict(flops=total, neck_flops=by_module.get('det.neck', 0),
                neck_modules={k[len('det.'):]: v for k, v in by_module.items()
                              if k.count('.') == 2 and k.startswith('det.neck.')},
                params=parameter_count(model)[''], unsupported=unsupported)
