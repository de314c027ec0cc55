#!/usr/bin/env bash
# Creates (or reuses) .venv at the project root with the pinned stack.
# Idempotent: a stamp keyed on requirements.txt and this script skips the work on a second run.
#
# Knobs (environment variables):
#   PYTHON=python3.11          interpreter used to create .venv
#   TORCH_SPEC="torch==2.13.0" another torch build, e.g. a CUDA wheel you already have
#   TORCH_INDEX_URL=...        extra index for that torch build
#   FORCE_CUDA=1               build mmcv's CUDA ops even if no GPU is visible at build time
#   TORCH_CUDA_ARCH_LIST="9.0" GPU architectures for the mmcv CUDA build
#   MAX_JOBS=N                 parallel compile jobs for the mmcv build
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.mmdet_dyhead_setup
KEY=$(cat requirements.txt tools/setup_env.sh pyproject.toml | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  echo "[setup] .venv is up to date ($STAMP)"; exit 0
fi
say() { echo "[setup] $*"; }
[ -x $VENV/bin/python ] || { say "creating $VENV with $($PY --version)"; $PY -m venv $VENV; }
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
say "base tools (setuptools<82: mmcv's setup.py and mmengine need pkg_resources)"
$PIP install -q --upgrade pip 'setuptools>=77,<82' wheel ninja
say "torch: ${TORCH_SPEC:-torch==2.13.0}"
$PIP install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
say "mmengine 0.10.7"
$PIP install -q mmengine==0.10.7
if ! $VENV/bin/python -c "import mmcv, mmcv._ext" 2>/dev/null; then
  say "mmcv 2.1.0 from source with ops. The first build takes about 13 minutes on 2 cores;"
  say "pip caches the wheel, so later environments on this machine take seconds."
  MMCV_WITH_OPS=1 $PIP install --no-build-isolation mmcv==2.1.0
fi
say "mmdet 3.3.0, pycocotools, test and lint tools"
$PIP install -q mmdet==3.3.0 pycocotools pytest hypothesis matplotlib ruff
say "deployment runtimes (pip wheels): onnx, onnxruntime, openvino"
$PIP install -q onnx==1.23.2 onnxruntime==1.31.1 openvino==2026.4.1
say "mmdet_dyhead (editable)"
$PIP install -q --no-deps --no-build-isolation -e .
if $VENV/bin/python -c "import torchvision" 2>/dev/null || $VENV/bin/python -m pip show torchvision >/dev/null 2>&1; then
  say "removing torchvision (its registry wheels do not load with a CPU torch; see README)"
  $PIP uninstall -y -q torchvision
fi
$VENV/bin/python -c "from mmcv.ops import ModulatedDeformConv2d, batched_nms, RoIAlign; import mmdet, mmdet_dyhead; print('[setup] ok: mmdet', mmdet.__version__)"
say "mmdet_dyhead's C++ sampling loops for the CPU deformable conv (about 20 s once per machine)"
$VENV/bin/python -c "from mmdet_dyhead.ops import cpu_ext; assert cpu_ext.load() is not None" \
  || say "warning: not built (no C++ compiler?); the CPU deformable conv uses torch loops (slower)"
echo "$KEY" > "$STAMP"
