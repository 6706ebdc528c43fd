#!/usr/bin/env bash
# Issue B: compress the real checkpoints for every CPU target plus the OpenVINO baselines (f32 hint and the
# default hint, which runs BF16 here), one compress run per checkpoint, so every ratio is measured in one run.
# Usage: bash benchmarks/suites/compress_b.sh [OUT_DIR]     (needs the datasets under $EDGESEG_DATA or ../shared/datasets)
set -euo pipefail
DATA=${EDGESEG_DATA:-../shared/datasets}
OUT=${1:-runs/compress_b}
PROFILES=x86-onnxruntime-int8,x86-avx512-openvino-int8,x86-avx512-openvino-int8-bf16,rtx-tensorrt-int8,x86-openvino-fp32,x86-openvino-default
run() {  # name checkpoint dataset [extra args]
  local name=$1 ckpt=$2 data=$3; shift 3
  /usr/bin/time -f "$name: compress wall %e s, peak RSS %M KB" \
    edgeseg compress "$ckpt" --int8 --calib "$DATA/$data" --eval-cases 0 --target-profile "$PROFILES" \
      --latency-repeats 40 --out "$OUT/$name" --force "$@" > "$OUT/$name.txt"
  cat "$OUT/$name.txt"
}
mkdir -p "$OUT"
run chest benchmarks/checkpoints/chest_xray_hybrid.ckpt Dataset002_ChestXrayLungs
run kvasir benchmarks/checkpoints/kvasir_hybrid.ckpt Dataset001_KvasirSEG
run chest_p50 benchmarks/checkpoints/chest_xray_hybrid_p50.ckpt Dataset002_ChestXrayLungs \
  --baseline-checkpoint benchmarks/checkpoints/chest_xray_hybrid.ckpt
