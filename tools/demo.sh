#!/usr/bin/env bash
# make demo: the main job (filled in by tools/ of the detectors issue).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
import torch, mmdet_dyhead
neck = mmdet_dyhead.DynamicHead(64, 64, num_blocks=2)
out = neck([torch.randn(1, 64, s, s) for s in (32, 16, 8, 4, 2)])
print('smoke example: DynamicHead output shapes', [tuple(o.shape) for o in out])
PY
