"""The C++ code of the CPU path (csrc/): the deformable conv, sampling loops and oneDNN GEMMs in one
call per direction (deform_sample.cpp), the scale- and task-aware attentions' element-wise pass
(scale_task.cpp), that pass with the norms and resizes folded in (norm_scale_task.cpp) and its
small (N, C) math (small_math.cpp), and the channels-last to contiguous copy at the neck's edges
(layout.cpp), one module built on first use. ``$MMDET_DYHEAD_BACKWARD_GEMM`` ('auto', 'onednn'
or 'mkl') picks the conv's backward GEMM library when it loads (``deform_conv.backward_gemm``).

Built with torch's JIT extension builder (ninja and a C++ compiler, ~20 s once per machine; the
result is cached under ``$TORCH_EXTENSIONS_DIR`` or ~/.cache/torch_extensions). Without a
compiler, or with ``MMDET_DYHEAD_CPU_EXT=0``, the conv uses its pure-torch loops instead: same
results, slower. ``tools/setup_env.sh`` builds it during ``make setup``.
"""
import functools
import hashlib
import os
import os.path as osp
import warnings

from ..utils.machine import cpuinfo_field

SOURCES = [osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', name)
           for name in ('deform_sample.cpp', 'scale_task.cpp', 'norm_scale_task.cpp',
                        'small_math.cpp', 'layout.cpp')]
HEADERS = [osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', name)  # in the build key
           for name in ('dtypes.h', 'dynamic_relu.h')]


# the libraries the conv's fp32 backward GEMMs can take (deform_conv.backward_gemm)
BACKWARD_GEMMS = ('auto', 'onednn', 'mkl')

# -mprefer-vector-width=512: GCC's tuning for AVX-512 CPUs keeps its vectorised loops at 256 bits
CFLAGS = ['-O3', '-fopenmp', '-march=native', '-mprefer-vector-width=512']


def enabled() -> bool:
    return os.environ.get('MMDET_DYHEAD_CPU_EXT', '1') != '0'


def runs_here() -> bool:
    """Whether the C++ code may run in this call: not under ONNX export, jit tracing or scripting,
    or torch.compile (those must see standard ops), and built."""
    import torch
    return (not torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and load() is not None)


@functools.lru_cache(maxsize=None)
def load():
    """The compiled module, or None (disabled, or the build failed: warned once)."""
    if not enabled():
        return None
    try:
        import torch
        from torch.utils.cpp_extension import load as build
        src = b''
        for path in SOURCES + HEADERS:
            with open(path, 'rb') as f:
                src += f.read()
        # -march=native: the name carries the CPU's feature flags, so a cache shared between
        # different machines never hands one a build it cannot run
        key = hashlib.sha1(src + ' '.join(CFLAGS).encode() + cpuinfo_field('flags').encode()
                           + torch.__version__.encode()).hexdigest()
        module = build(f'mmdet_dyhead_cpu_{key[:12]}', SOURCES,
                       extra_cflags=CFLAGS,
                       extra_ldflags=['-fopenmp'], verbose=False)
    except Exception as e:  # no compiler, no ninja, ...
        warnings.warn(f'mmdet_dyhead: the C++ sampling loops could not be built ({e!s:.300}); '
                      f'the CPU deformable conv uses its pure-torch loops (same results, slower). '
                      f'Set MMDET_DYHEAD_CPU_EXT=0 to skip the build.')
        return None
    apply_env(module)
    return module


def apply_env(module) -> None:
    """``$MMDET_DYHEAD_BACKWARD_GEMM``, where set, as the built module's backward GEMM library."""
    library = os.environ.get('MMDET_DYHEAD_BACKWARD_GEMM')
    if library:
        if library not in BACKWARD_GEMMS:
            raise ValueError(f'MMDET_DYHEAD_BACKWARD_GEMM must be one of {BACKWARD_GEMMS}, '
                             f'got {library!r}')
        module.backward_gemm(library)
