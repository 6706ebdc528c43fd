#!/usr/bin/env bash
# Issue L, the damage series: does the explanation drift move with the Dice drift? One model (the committed chest
# X-ray hybrid), damaged in steps — the default INT8, INT8 without the fragile-ops preset, INT8 calibrated on one
# image, 50 % pruned without recovery (FP32) — each explained against the FP32 model on the same 32 val cases at
# the same map settings. The FP32 model against itself is the sanity row of every result (drift 0 by check).
# Output: $OUT (default runs/explain_damage_l); summarized by explain_damage_table.py. About 60 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${EDGESEG_DATA:-../shared/datasets}
OUT=${OUT:-runs/explain_damage_l}
CHEST="$DATA/Dataset002_ChestXrayLungs"
CKPT=benchmarks/checkpoints/chest_xray_hybrid.ckpt
mkdir -p "$OUT"
compress() {  # name, options
  edgeseg compress "$CKPT" --targets onnx --threads 2 --out "$OUT/$1.bundle" --force "${@:2}" \
    > "$OUT/$1_compress.log" 2>&1
}
explain() {  # name, options
  edgeseg explain "$OUT/$1.bundle" --data "$CHEST" --cases 32 --threads 2 --out "$OUT/$1" --force "${@:2}" \
    > "$OUT/$1_explain.log" 2>&1
}
compress int8_default --int8 --calib "$CHEST"
compress int8_no_preset --int8 --calib "$CHEST" --no-preset
compress int8_calib1 --int8 --calib "$CHEST" --calib-size 1
compress p50_no_recovery --precision fp32 --prune 0.5 --finetune-epochs 0
for name in int8_default int8_no_preset int8_calib1; do
  explain "$name" --artifacts x86-onnxruntime-int8
done
explain p50_no_recovery --baseline-checkpoint "$CKPT" --gradcam-plus-plus  # Grad-CAM and Grad-CAM++ of the pruned model
python benchmarks/suites/explain_damage_table.py "$OUT" > "$OUT/damage.md"
