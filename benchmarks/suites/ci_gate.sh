#!/usr/bin/env bash
# The project's own latency/Dice gate (run by .ci/run): compress the committed chest X-ray checkpoint, bench it
# on 8 real validation cases, gate against benchmarks/baselines/<device-class>.json in relative mode
# (latency ÷ the fixed workload on the artifact's runtime, same run). A broken latency limit is confirmed by the
# gate's own second bench run ($OUT/bench.confirm.json): latency fails only if it is slower in both runs (Dice
# is deterministic and fails either way).
#   bash benchmarks/suites/ci_gate.sh [OUT_DIR]              # gate
#   UPDATE_BASELINE=1 bash benchmarks/suites/ci_gate.sh      # re-measure (3 bench runs) and write the baseline
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${EDGESEG_DATA:-../shared/datasets}/Dataset002_ChestXrayLungs"
out="${1:-runs/ci_gate}"
mkdir -p "$out"
edgeseg compress benchmarks/checkpoints/chest_xray_hybrid.ckpt --int8 --calib "$data" --calib-size 32 \
  --targets onnx,openvino --eval-cases 8 --latency-repeats 10 --threads 2 --out "$out/bundle" --force
bench() {
  edgeseg bench "$out/bundle" --data "$data" --split val --cases 8 --threads 2 --repeats 60 --rounds 6 \
    --batch-size 0 --e2e-cases 0 --out "$1" --force
}
if [ -n "${UPDATE_BASELINE:-}" ]; then  # the baseline pools three runs: medians, and their run-to-run spread
  for i in 1 2 3; do bench "$out/baseline-run$i.json"; done
  exec edgeseg gate "$out"/baseline-run{1,2,3}.json --baseline-dir benchmarks/baselines --update-baseline
fi
bench "$out/bench.json"
class=$(python -c "import sys; from edgeseg.benchmark.schema import read_result; from edgeseg.gating import device_class; \
print(device_class(read_result(sys.argv[1])))" "$out/bench.json")
baseline="benchmarks/baselines/$class.json"
extra=()
if [ ! -f "$baseline" ]; then  # a runner of another class: Dice is gated, latency shown but not judged
  baseline="benchmarks/baselines/cpu-x86_64-amx-2t.json"
  extra=(--allow-device-mismatch)
  echo "note: no baseline for device class $class; gating Dice against $baseline (latency not judged across CPU generations) — commit one with UPDATE_BASELINE=1"
fi
# 20 %, not the default 10 %: on a shared 2-core runner, load from elsewhere moved latency ratios by up to ~15 %
# with nothing changed (benchmarks/README.md, "Gate under contention"); what this gate guards against (an op
# left in FP32, a runtime setting lost) costs far more
exec edgeseg gate "$out/bench.json" --baseline "$baseline" --max-latency-regression 20% --junit "$out/gate.xml" \
  "${extra[@]}"
