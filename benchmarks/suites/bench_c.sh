#!/usr/bin/env bash
# Issue C: compress each real checkpoint (INT8 for ONNX Runtime, OpenVINO and TensorRT), then `edgeseg bench`
# every bundle on its whole validation split with --compare-baselines (torch.compile, OpenVINO f32/default,
# ORT quantize_static and NNCF defaults built from the same FP32 model), 2 threads, each artifact timed in its
# own process. Results: OUT/<name>.json/.md/.png.
# Usage: bash benchmarks/suites/bench_c.sh [OUT_DIR] [NAMES...]   (datasets under $EDGESEG_DATA or ../shared/datasets)
set -euo pipefail
DATA=${EDGESEG_DATA:-../shared/datasets}
OUT=${1:-runs/bench_c}
shift || true
NAMES=${*:-chest kvasir brats chest_p50}
mkdir -p "$OUT"
one() {  # name checkpoint dataset [bench args]
  local name=$1 ckpt=$2 data=$3; shift 3
  [ -d "$OUT/$name.bundle" ] || edgeseg compress "$ckpt" --int8 --calib "$DATA/$data" --eval-cases 8 \
    --latency-repeats 10 --out "$OUT/$name.bundle" > "$OUT/$name.compress.txt"
  /usr/bin/time -f "$name: bench wall %e s, peak RSS %M KB" \
    edgeseg bench "$OUT/$name.bundle" --data "$DATA/$data" --threads 2 --repeats 40 --rounds 2 --batch-size 8 \
      --e2e-cases 8 --compare-baselines --out "$OUT/$name.json" --force "$@" > "$OUT/$name.txt"
  cat "$OUT/$name.txt"
}
for name in $NAMES; do
  case $name in
    chest) one chest benchmarks/checkpoints/chest_xray_hybrid.ckpt Dataset002_ChestXrayLungs ;;
    kvasir) one kvasir benchmarks/checkpoints/kvasir_hybrid.ckpt Dataset001_KvasirSEG ;;
    brats) one brats benchmarks/checkpoints/brats_hybrid.ckpt Dataset005_BraTSMini ;;
    chest_p50) one chest_p50 benchmarks/checkpoints/chest_xray_hybrid_p50.ckpt Dataset002_ChestXrayLungs \
      --baseline-checkpoint benchmarks/checkpoints/chest_xray_hybrid.ckpt ;;
    *) echo "unknown suite entry $name" >&2; exit 1 ;;
  esac
done
