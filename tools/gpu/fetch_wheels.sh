#!/usr/bin/env bash
# Fills .whl/ (git-ignored through .git/info/exclude) with what tools/gpu/check.sh needs on a GPU
# machine that has a CUDA torch but no network: mmcv's source archive and the pure-Python and
# cp312 wheels of mmengine, mmdet and their needs. Run it here, where the registry is reachable,
# with `make setup` done (pip reads mmcv's setup.py, which imports torch).
#
#   bash tools/gpu/fetch_wheels.sh [PYTHON_VERSION]     (default 3.12, the lent machines' python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYV=${1:-3.12}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
.venv/bin/python -m pip download -q --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d .whl
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl mmengine==0.10.7 mmdet==3.3.0 addict yapf platformdirs termcolor terminaltables \
  pycocotools shapely 'setuptools==80.9.0'
ls .whl
