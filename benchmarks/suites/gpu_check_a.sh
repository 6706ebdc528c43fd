#!/usr/bin/env bash
# Device check for issue A (run from the repository root with $OUT set): the suite on the GPU machine's torch, GPU training of the phantom recipe,
# and FP32/FP16 GPU latency of the chest X-ray checkpoint (batch 1, 256x256).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, onnx, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'onnx', onnx.__version__, 'ort', onnxruntime.__version__)"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee $OUT/pytest.log | tail -12
python3 -m edgeseg.cli data phantom /tmp/ph --cases 80 --size 128 --seed 0
/usr/bin/time -f "wall %e s" python3 -m edgeseg.cli train --data /tmp/ph --arch hybrid --size 128 --epochs 20 \
  --arch-arg base=8 --arch-arg max_width=64 --arch-arg embed_dim=64 --arch-arg num_layers=1 --flip xy \
  --device cuda --out /tmp/ph.ckpt 2>&1 | tee $OUT/train_gpu.log | grep -v "^train" | tail -14
python3 - <<'PY' 2>&1 | tee $OUT/latency_gpu.txt
import time, torch
from edgeseg.checkpoint import load_checkpoint
m, _ = load_checkpoint("benchmarks/checkpoints/chest_xray_hybrid.ckpt")
m = m.cuda().eval()
for bs in (1, 8):
    x = torch.randn(bs, 1, 256, 256, device="cuda")
    ref = None
    for name, dt in (("fp32", None), ("fp16", torch.float16)):
        with torch.inference_mode(), torch.autocast("cuda", dtype=dt or torch.float32, enabled=dt is not None):
            for _ in range(30):
                y = m(x)
            torch.cuda.synchronize()
            ts = []
            for _ in range(200):
                t = time.perf_counter(); y = m(x); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
        ts.sort()
        ref = y.float() if ref is None else ref
        agree = (y.float().argmax(1) == ref.argmax(1)).float().mean().item()
        print(f"batch {bs} {name}: p50 {ts[100]*1e3:.2f} ms p90 {ts[180]*1e3:.2f} ms, mask agreement vs fp32 {agree:.5f}")
PY
