#!/usr/bin/env python
"""Trim an unpacked mmcv 2.1.0 source tree to the CUDA kernels this project's GPU checks need.

    python tools/gpu/mmcv_subset.py /path/to/mmcv-2.1.0

A full CUDA build of mmcv compiles about 60 .cu files; on a GPU machine lent for minutes that is
most of the time. This keeps every CPU op and the pybind module unchanged (so ``mmcv.ops`` imports
and every name exists) and keeps the CUDA kernels of the modulated deformable conv (DyHead's
spatial-aware attention), NMS, RoIAlign and the focal losses (ATSS, RetinaNet). Other ops on a GPU
raise mmcv's own "no implementation for CUDA" error. A full build (``tools/setup_env.sh`` with
``FORCE_CUDA=1``) gives the same kernels; this is only faster to build.
"""
import glob
import os
import os.path as osp
import re
import sys

KEEP_CU = ['modulated_deform_conv_cuda.cu', 'nms_cuda.cu', 'roi_align_cuda.cu',
           'focal_loss_cuda.cu']
KEEP_BINDINGS = ['modulated_deformable_im2col_cuda', 'NMSCUDAKernelLauncher',
                 'ROIAlignForwardCUDAKernelLauncher', 'SigmoidFocalLossForwardCUDAKernelLauncher']
# C++ files that call CUDA-only functions directly (not through the device registry)
DIRECT_CUDA = ['nms_quadri.cpp', 'nms_rotated.cpp', 'spconv_ops.cpp', 'deform_conv.cpp']
# torch removed the THC headers; ATen's Atomic.cuh has the same atomicAdd overloads
THC = '#include <THC/THCAtomics.cuh>'


def chunks(text: str):
    """cudabind.cpp as one chunk per op: everything up to and including its REGISTER_DEVICE_IMPLs."""
    out, cur, in_reg = [], [], False
    for line in text.splitlines(keepends=True):
        starts_reg = line.startswith('REGISTER_DEVICE_IMPL')
        if in_reg and not starts_reg and not line.startswith(' ') and line.strip():
            out.append(''.join(cur))
            cur, in_reg = [], False
        cur.append(line)
        in_reg = in_reg or starts_reg
    out.append(''.join(cur))
    return out


def main(root: str) -> None:
    csrc = osp.join(root, 'mmcv/ops/csrc')
    cuda = osp.join(csrc, 'pytorch/cuda')
    if not osp.isfile(osp.join(cuda, 'cudabind.cpp')):
        sys.exit(f'{root} is not an unpacked mmcv source tree (no {cuda}/cudabind.cpp)')
    done = osp.join(root, '.mmcv_subset')
    if osp.exists(done):
        print(f'{root} is already trimmed')
        return
    for f in glob.glob(osp.join(cuda, '*.cu')):
        if osp.basename(f) not in KEEP_CU:
            os.remove(f)
    with open(osp.join(cuda, 'cudabind.cpp')) as f:
        parts = chunks(f.read())
    includes, parts[0] = parts[0].split('\n\n', 1)
    kept = [c for c in parts if any(k in c for k in KEEP_BINDINGS)]
    if len(kept) != len(KEEP_BINDINGS):
        sys.exit(f'found {len(kept)} of the {len(KEEP_BINDINGS)} bindings in cudabind.cpp')
    with open(osp.join(cuda, 'cudabind.cpp'), 'w') as f:
        f.write(includes + '\n\n' + ''.join(kept))
    for name in DIRECT_CUDA:
        path = osp.join(csrc, 'pytorch', name)
        with open(path) as f:
            src = f.read()
        with open(path, 'w') as f:
            f.write('#undef MMCV_WITH_CUDA  // trimmed build: no CUDA kernel for this op\n' + src)
    for path in glob.glob(osp.join(csrc, '**/*.h*'), recursive=True) + \
            glob.glob(osp.join(cuda, '*.cu')):
        with open(path) as f:
            src = f.read()
        if THC in src:
            with open(path, 'w') as f:
                f.write(src.replace(THC, '#include <ATen/cuda/Atomic.cuh>'))
    open(done, 'w').close()
    names = re.findall(r'REGISTER_DEVICE_IMPL\((\w+),', ''.join(kept))
    print(f'kept {len(KEEP_CU)} .cu files, {len(names)} CUDA registrations: {", ".join(names)}')


if __name__ == '__main__':
    main(sys.argv[1])
