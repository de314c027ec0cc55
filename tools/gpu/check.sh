#!/usr/bin/env bash
# The GPU checks, in one go: the unit tests on CUDA (mmcv's CUDA kernel against ours and mmdet's
# DyHead), the fp16 autocast test, and the GPU speed tables in fp32 and fp16.
#
#   bash tools/gpu/check.sh [OUT]        (OUT defaults to outputs/gpu)
#   STEPS="tests" bash tools/gpu/check.sh   (a subset of: fp16 bench tests)
#
# Runs with whatever python3 holds a CUDA build of torch. Where mmcv is not importable with CUDA ops,
# it builds one from the source archive in WHEELS (default .whl/, with mmengine, mmdet and their
# pure-Python needs as wheels): the deformable conv, NMS, RoIAlign and focal-loss kernels only
# (tools/gpu/mmcv_subset.py; 2 minutes on the 16 cores of the lent H200 machine). Fill WHEELS
# with tools/gpu/fetch_wheels.sh where the registry is reachable.
# Each step has its own time limit and a failed step does not stop the next; the exit status
# counts the failed steps.
set -u
cd "$(dirname "$0")/../.."
OUT=${1:-${OUT:-outputs/gpu}}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/mmdet_dyhead_site}
mkdir -p "$OUT"
LOG=$OUT/log.txt
fails=0
STEPS=${STEPS:-fp16 bench tests}
want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
build_mmcv() {  # build_mmcv STEP_NAME: mmcv's extension in place in $SRC, CUDA ops on
  step "$1" 420 bash -c "cd $SRC && MMCV_WITH_OPS=1 FORCE_CUDA=1 MAX_JOBS=\${MAX_JOBS:-\$(nproc)} \
    TORCH_CUDA_ARCH_LIST=\${TORCH_CUDA_ARCH_LIST:-9.0} python3 setup.py build_ext --inplace"
}
step() {  # step NAME SECONDS CMD...: run, log, count a failure
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T), limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc" | tee -a "$LOG"
  [ $rc -eq 0 ] || fails=$((fails + 1))
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -2
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } >>"$LOG" 2>&1

if ! python3 -c "from mmcv.ops import get_compiling_cuda_version as v; assert v() != 'not available'" \
    2>/dev/null; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 && step wheels 120 python3 -m pip install -q --no-index \
    --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  SRC=/tmp/mmcv-2.1.0
  if ! ls $SRC/mmcv/_ext*.so >/dev/null 2>&1; then
    rm -rf $SRC && tar xzf "$WHEELS"/mmcv-2.1.0.tar.gz -C /tmp
    if ls "$WHEELS"/_ext*.so >/dev/null 2>&1; then  # a build from an earlier run, carried back
      cp "$WHEELS"/_ext*.so $SRC/mmcv/
    else
      step mmcv_subset 30 python3 tools/gpu/mmcv_subset.py $SRC
      build_mmcv mmcv_build
      so=$(ls $SRC/mmcv/_ext*.so 2>/dev/null | head -1)
      [ -n "$so" ] && strip --strip-debug -o "$OUT/$(basename "$so")" "$so"
    fi
  fi
  export PYTHONPATH=$SRC:$PYTHONPATH
  # Load the libstdc++ of the compiler that built mmcv first (a newer one is backward compatible).
  # Without it, on the lent H200, get_compiling_cuda_version crashed the interpreter; with it it
  # ran (docs/speed.md, GPU). If it still crashes, the version string is made without iostreams.
  lib=$(${CXX:-g++} -print-file-name=libstdc++.so.6 2>/dev/null)
  { ${CXX:-g++} --version | head -1; echo "compiler's libstdc++: $lib"; } >>"$LOG" 2>&1
  [ -f "$lib" ] && case "$lib" in /usr/lib*) ;; *) export LD_PRELOAD=$lib${LD_PRELOAD:+:$LD_PRELOAD} ;; esac
  if ! python3 -c "from mmcv.ops import get_compiling_cuda_version as v; print('mmcv CUDA', v())" \
      >>"$LOG" 2>&1; then
    sed -i 's/^std::string get_compiling_cuda_version() {/&\n#if defined(MMCV_WITH_CUDA) \&\& !defined(MMCV_WITH_HIP)\n  { int v = get_cudart_version(); return std::to_string(v \/ 1000) + "." + std::to_string(v \/ 10 % 100); }\n#endif/' \
      $SRC/mmcv/ops/csrc/pytorch/info.cpp
    grep -n "to_string" $SRC/mmcv/ops/csrc/pytorch/info.cpp >>"$LOG"
    python3 tools/gpu/mmcv_subset.py $SRC >>"$LOG" 2>&1
    build_mmcv mmcv_rebuild
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MMDET_DYHEAD_CPU_EXT=0
step imports 120 python3 -c "import mmcv, mmdet, mmdet_dyhead
from mmcv.ops import get_compiling_cuda_version as v; print('mmcv', mmcv.__version__, 'CUDA', v())"

# fp16 autocast on the GPU (skipped without CUDA in make test), then the speed tables, then the
# unit tests with every tensor on the GPU (tests/conftest.py: TORCH_DEVICE=cuda).
want fp16 && step test_fp16 60 python3 -m pytest -q -p no:cacheprovider tests/test_reliability.py -k gpu
IMPLS=('mmdet DyHead' 'ours, mmcv kernel' 'ours, torch kernel' 'ours, default' '4 stacked convs')
want bench && for dtype in fp32 fp16; do
  step bench_$dtype 120 python3 tools/benchmark_neck.py --device cuda --dtype $dtype --impls "${IMPLS[@]}" \
    --repeats "${REPEATS:-10}" --plot-sizes --no-atss --no-memory --out "$OUT/bench_gpu_$dtype"
  rm -f "$OUT/bench_gpu_$dtype/time_vs_size.png"  # redrawn from results.json (--from-json)
done
want tests && step tests_cuda 150 env TORCH_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider -m "not slow" \
  --tb=short tests/test_deform_conv.py tests/test_parity.py tests/test_neck.py tests/test_attentions.py \
  tests/test_scale_task.py tests/test_norm_scale_task.py tests/test_visualize_attention.py
echo "=== failed steps: $fails" | tee -a "$LOG"
exit $fails
