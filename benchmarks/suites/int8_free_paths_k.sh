#!/usr/bin/env bash
# Issue K, parts 2 and 3: edgeseg's INT8 against what users get for free, with the per-layer evidence, and the
# runtime settings on a busy device. For the committed chest X-ray and Kvasir checkpoints: compress (INT8, ONNX
# Runtime + OpenVINO), bench on the val split with --compare-baselines (OpenVINO f32 and default precision, NNCF
# quantize defaults, ONNX Runtime quantize_static defaults, torch.compile) and --profile (per-layer tables);
# the 50 % pruned chest model with and without --align 16 against the unpruned model in eager; then the
# runtime settings under load (runtime_settings_load.py). Output: $OUT (default runs/int8_free_paths_k).
# Run on an idle machine: the latencies are the point (about 50 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${EDGESEG_DATA:-../shared/datasets}
OUT=${OUT:-runs/int8_free_paths_k}
CHEST="$DATA/Dataset002_ChestXrayLungs"
mkdir -p "$OUT"
bench() {  # bundle, dataset, name, extra options
  edgeseg bench "$1" --data "$2" --split val --threads 2 --rounds 3 --e2e-cases 8 --batch-size 0 --compare-baselines \
    --profile --out "$OUT/$3_bench.json" --force "${@:4}" > "$OUT/$3_bench.log"
}
compress() {  # checkpoint, dataset, name, extra options
  edgeseg compress "$1" --int8 --targets onnx,openvino --calib "$2" --threads 2 --out "$OUT/$3.bundle" --force \
    "${@:4}" > "$OUT/$3_compress.log"
}
for pair in chest:Dataset002_ChestXrayLungs:chest_xray_hybrid kvasir:Dataset001_KvasirSEG:kvasir_hybrid; do
  IFS=: read -r name dataset ckpt <<< "$pair"
  compress "benchmarks/checkpoints/$ckpt.ckpt" "$DATA/$dataset" "$name"
  bench "$OUT/$name.bundle" "$DATA/$dataset" "$name"
done
# 50 % pruned chest: the committed checkpoint (widths unrounded, 8…128) and the same recipe with widths in
# multiples of 16 (the INT8 default now), 12 recovery epochs as benchmarks/suites/prune_chest_p50.py
compress benchmarks/checkpoints/chest_xray_hybrid_p50.ckpt "$CHEST" chest_p50 \
  --baseline-checkpoint benchmarks/checkpoints/chest_xray_hybrid.ckpt
compress benchmarks/checkpoints/chest_xray_hybrid.ckpt "$CHEST" chest_p50_align16 --prune 0.5 --align 16 \
  --finetune-epochs 12 --finetune-minutes 15
for name in chest_p50 chest_p50_align16; do
  bench "$OUT/$name.bundle" "$CHEST" "$name" --baseline-checkpoint benchmarks/checkpoints/chest_xray_hybrid.ckpt
done
for name in chest kvasir; do
  python benchmarks/suites/runtime_settings_load.py "$OUT/$name.bundle" --out "$OUT/${name}_settings_load.json" \
    > "$OUT/${name}_settings_load.log"
done
# edgeseg infer over 100 images per INT8 artifact: the end-to-end graph and the host path against model-only time
for pair in chest:Dataset002_ChestXrayLungs kvasir:Dataset001_KvasirSEG; do
  IFS=: read -r name dataset <<< "$pair"
  for artifact in x86-onnxruntime-int8 x86-avx512-openvino-int8; do
    python benchmarks/suites/infer_throughput.py "$OUT/$name.bundle" --data "$DATA/$dataset" --n 100 --threads 2 \
      --artifact "$artifact" --out "$OUT/${name}_infer_${artifact}.json" > /dev/null
  done
done
