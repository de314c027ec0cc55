"""Where a neck's CPU time goes, by part: torch.profiler's events, each op's own (self) time put
into one category (``tools/profile_neck.py`` is the command line).

Inside the deformable conv (its registered forward and backward ops) the categories are its
GEMMs, its C++ sampling loops (the ``mmdet_dyhead::gemm`` and ``mmdet_dyhead::sample_loops``
ranges the C++ conv records around each) and the rest (tap positions, bilinear weights,
indexing, copies); outside it, GroupNorm, the other convs
(DynamicHead's offset convs, the towers' 3x3 convs), resizes, copies and layout changes, and the
attentions' remaining element-wise math and pooling. The backward is attributed through the
autograd node that runs each op (``NativeGroupNormBackward0`` -> GroupNorm, ...).
"""
from typing import Callable, Dict, Iterable, List, Optional

DCN_OPS = ('mmdet_dyhead::deform_conv2d_levels', 'mmdet_dyhead::deform_conv2d_levels_backward')
LOOPS = 'mmdet_dyhead::sample_loops'
CATEGORIES = ('deformable conv: GEMM', 'deformable conv: sampling loops',
              'deformable conv: positions, weights, indexing', 'GroupNorm',
              'other convs (offsets / stacked)', 'resize (bilinear)',
              'copies and layout', 'attentions: element-wise and pooling')
_GEMM = ('mmdet_dyhead::gemm', 'aten::mm', 'aten::addmm', 'aten::bmm', 'aten::matmul', 'aten::linear',
         'aten::mkldnn_linear', 'aten::_mkldnn_linear', 'mkldnn::', 'aten::baddbmm')
_COPY = ('aten::copy_', 'aten::contiguous', 'aten::clone', 'aten::cat', 'aten::to',
         'aten::_to_copy', 'aten::stack', 'aten::empty', 'aten::zeros', 'aten::zero_',
         'aten::fill_', 'aten::new_empty', 'aten::empty_strided', 'aten::new_zeros',
         'aten::as_strided', 'aten::view', 'aten::reshape', 'aten::permute', 'aten::transpose',
         'aten::split', 'aten::slice', 'aten::select', 'aten::narrow', 'aten::expand',
         'aten::unsqueeze', 'aten::squeeze', 'aten::flatten', 'aten::t', 'aten::detach',
         'aten::resolve_conj', 'aten::resolve_neg', 'aten::alias', 'aten::unbind',
         'aten::index_select', 'aten::resize_',
         '_ToContiguous', '_ToChannelsLast')  # ops/layout.py's (forward and backward nodes)


def category(name: str, ancestors: Iterable[str]) -> str:
    """The category of an op ``name`` whose enclosing ranges and ops are ``ancestors``
    (innermost first)."""
    ancestors = list(ancestors)
    if name == LOOPS:
        return CATEGORIES[1]
    in_dcn = any(a in DCN_OPS for a in ancestors) or name in DCN_OPS
    if in_dcn:
        if name.startswith(_GEMM):
            return CATEGORIES[0]
        return CATEGORIES[2]
    chain = [name] + ancestors
    if any('group_norm' in a.lower() or 'GroupNorm' in a for a in chain):
        return CATEGORIES[3]
    if any(a.startswith(('aten::convolution', 'aten::_convolution', 'aten::conv2d',
                         'aten::mkldnn_convolution', 'ConvolutionBackward',
                         'aten::convolution_backward')) for a in chain):
        return CATEGORIES[4]
    if any('upsample' in a.lower() for a in chain):
        return CATEGORIES[5]
    if name.startswith(_COPY):
        return CATEGORIES[6]
    return CATEGORIES[7]


def _ancestors(event):
    parent = event.cpu_parent
    while parent is not None:
        yield parent.name
        parent = parent.cpu_parent


_ENGINE = 'autograd::engine::evaluate_function: '


def _backward_node(ancestors: List[str]) -> Optional[str]:
    """The autograd node a backward op runs in, from its ``ancestors``: ops the engine runs
    between nodes (e.g. adding up a gradient) have only ``evaluate_function: NODE`` above them,
    not the node's own event."""
    return next((a[len(_ENGINE):] for a in ancestors if a.startswith(_ENGINE)), None)


def profile(step: Callable[[], None], rounds: int = 1) -> Dict[str, float]:
    """Milliseconds of self CPU time per category over ``rounds`` calls of ``step`` (averaged),
    and their ``total``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            step()
    out = dict.fromkeys(CATEGORIES, 0.0)
    for e in prof.events():
        if e.name.startswith(('autograd::engine::evaluate_function', 'ProfilerStep')):
            # their self time is the engine's bookkeeping: counted with the op they run
            ancestors = [e.name.split(': ', 1)[-1]]
        else:
            ancestors = list(_ancestors(e))
            node = _backward_node(ancestors)
            if node:
                ancestors.append(node)
        out[category(e.name, ancestors)] += e.self_cpu_time_total / 1000 / rounds
    out['total'] = sum(out[c] for c in CATEGORIES)
    return out
