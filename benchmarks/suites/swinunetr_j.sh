#!/usr/bin/env bash
# Issue J: the MONAI SwinUNETR bundle (benchmarks/foreign/monai_chest_swinunetr_bundle, trained by
# benchmarks/foreign/train_monai.py with NETWORK=swinunetr) imported, compressed with and without the fragile-ops
# preset, and benched on all 65 chest val cases against torch eager and torch.compile. Output: $OUT (default
# runs/swinunetr_j). Run on an idle machine: the bench's latencies are the point. The --no-preset drift is the one
# compress measures (its manifest).
set -euo pipefail
cd "$(dirname "$0")/../.."
CHEST=${EDGESEG_DATA:-../shared/datasets}/Dataset002_ChestXrayLungs
OUT=${OUT:-runs/swinunetr_j}
mkdir -p "$OUT"
SRC=benchmarks/foreign/monai_chest_swinunetr_bundle
/usr/bin/time -f "import %e s" edgeseg import $SRC --out "$OUT/swin.ckpt" --data "$CHEST" --parity-cases 16 --json \
    > "$OUT/import.json"
edgeseg evaluate "$OUT/swin.ckpt" --data "$CHEST" --split val --out "$OUT/swin_eval.json"
# default: the fragile-ops preset keeps LayerNorm/Softmax/GELU float, --max-dice-drop tunes the rest
/usr/bin/time -f "compress (preset, max-dice-drop) %e s" edgeseg compress "$OUT/swin.ckpt" --out "$OUT/swin.bundle" \
    --int8 --targets onnx,openvino --calib "$CHEST" --eval-data "$CHEST" --max-dice-drop 0.5 --allow-miss \
    > "$OUT/compress_preset.log"
# the same without the preset: what quantizing the transformer's fragile ops costs
/usr/bin/time -f "compress (no preset) %e s" edgeseg compress "$OUT/swin.ckpt" --out "$OUT/swin_nopreset.bundle" \
    --int8 --targets onnx,openvino --calib "$CHEST" --eval-data "$CHEST" --no-preset \
    > "$OUT/compress_nopreset.log"
edgeseg bench "$OUT/swin.bundle" --data "$CHEST" --split val --compare-baselines --out "$OUT/bench_swin.json"
