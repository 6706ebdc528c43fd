#!/usr/bin/env bash
# Issue K, part 1: pre- and post-processing in the deployed graph. For the committed chest X-ray and Kvasir
# checkpoints: compress (INT8, ONNX Runtime + OpenVINO; every ORT/OV artifact gets its end-to-end graph), bench on
# the val split with end-to-end cases (model-only vs end to end, one run each), then `edgeseg infer` over 100
# images per INT8 artifact against its model-only time (infer_throughput.py), and the masks of the end-to-end
# graph against the host path's (--probabilities) on every val image. Output: $OUT (default runs/end_to_end_k).
# Run on an idle machine: the latencies are the point.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${EDGESEG_DATA:-../shared/datasets}
OUT=${OUT:-runs/end_to_end_k}
mkdir -p "$OUT"
for pair in chest:Dataset002_ChestXrayLungs:chest_xray_hybrid kvasir:Dataset001_KvasirSEG:kvasir_hybrid; do
  IFS=: read -r name dataset ckpt <<< "$pair"
  d="$DATA/$dataset"
  edgeseg compress "benchmarks/checkpoints/$ckpt.ckpt" --int8 --targets onnx,openvino --calib "$d" --threads 2 \
    --out "$OUT/$name.bundle" --force > "$OUT/${name}_compress.log"
  edgeseg bench "$OUT/$name.bundle" --data "$d" --split val --threads 2 --rounds 3 --e2e-cases 16 --batch-size 0 --load 0.3 \
    --out "$OUT/${name}_bench.json" --force > "$OUT/${name}_bench.log"
  for artifact in x86-onnxruntime-int8 x86-avx512-openvino-int8; do
    python benchmarks/suites/infer_throughput.py "$OUT/$name.bundle" --data "$d" --n 100 --threads 2 \
      --artifact "$artifact" --out "$OUT/${name}_infer_${artifact}.json" > /dev/null
  done
  python benchmarks/suites/end_to_end_parity.py "$OUT/$name.bundle" --data "$d" --out "$OUT/${name}_parity.json"
done
