#!/usr/bin/env bash
# make demo: the main job on the embedded demo data.
# Generates data/shapes if missing, trains ATSS + DynamicHead with tools/train.py, evaluates with
# tools/test.py (COCO bbox mAP through pycocotools), draws predictions on a few val images and
# prints where the learning curve is; then exports the model to ONNX (onnxruntime, no custom op
# library) and evaluates the export the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=${CONFIG:-configs/demo/atss_r18_fpn_dyhead_16e_shapes.py}
WORK=${WORK:-work_dirs/demo}
start=$(date +%s)
# (re)generated only if missing or of an older format (the same images and boxes, masks added)
$PY -m mmdet_dyhead.demo_data --out data/shapes --if-needed
echo "[demo] training $CONFIG (progress every 10 iterations; 10 to 15 minutes on 2 CPU cores)"
$PY tools/train.py "$CONFIG" --work-dir "$WORK"
CKPT=$(cat "$WORK/last_checkpoint")
echo "[demo] evaluating $CKPT on the val split"
$PY tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" | tee "$WORK/test.log" | grep -E "Average Precision|^metrics:"
echo "[demo] drawing predictions on 4 val images"
$PY tools/infer.py "$CONFIG" "$CKPT" data/shapes/val/0000{0,1,2,3}.jpg --out-dir "$WORK/predictions" | tail -1
if [[ "$CONFIG" == *dyhead* ]]; then
  echo "[demo] drawing what DynamicHead's attentions do on one val image"
  $PY tools/visualize_attention.py "$CONFIG" "$CKPT" data/shapes/val/00003.jpg --out "$WORK/attention" | tail -1
fi
echo "[demo] exporting to ONNX for onnxruntime (standard DeformConv) and evaluating the export"
$PY tools/deploy.py "$CONFIG" "$CKPT" --backend onnxruntime --dynamic --out "$WORK/onnxruntime" | tail -1
$PY tools/test.py "$CONFIG" "$WORK/onnxruntime" --backend onnxruntime --work-dir "$WORK/test_onnxruntime" > "$WORK/test_onnxruntime.log"
ORT_MAP=$(grep '^metrics:' "$WORK/test_onnxruntime.log" | sed -E 's/.*"coco\/bbox_mAP": ([0-9.]+).*/\1/')
MAP=$(grep '^metrics:' "$WORK/test.log" | sed -E 's/.*"coco\/bbox_mAP": ([0-9.]+).*/\1/')
SEGM=$(grep '^metrics:' "$WORK/test.log" | sed -nE 's/.*"coco\/segm_mAP": ([0-9.]+).*/\1/p')
echo
echo "[demo] val bbox mAP@[.5:.95] = $MAP   ($(( $(date +%s) - start )) s in all)"
if [ -n "$SEGM" ]; then
  echo "[demo] val mask mAP@[.5:.95] = $SEGM"
fi
echo "[demo] the same model exported to onnxruntime: val bbox mAP = $ORT_MAP (PyTorch: $MAP; export in $WORK/onnxruntime)"
echo "[demo] checkpoint: $CKPT"
echo "[demo] predictions drawn: $WORK/predictions/vis/"
echo "[demo] learning curve (loss, val mAP every 2 epochs): $WORK/learning_curve.png"
if [ -d "$WORK/attention" ]; then
  echo "[demo] attention pictures (scale, spatial, task): $WORK/attention/"
fi
