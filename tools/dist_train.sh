#!/usr/bin/env bash
# Multi-process training with torchrun, as mmdet's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# On a machine without GPUs the processes use the gloo backend (chosen in tools/train.py).
set -euo pipefail
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
DIR=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$DIR/../.venv/bin/python}
[ -x "$PY" ] || PY=python
exec "$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" --nproc_per_node="$NPROC" --master_port="$PORT" \
  "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
