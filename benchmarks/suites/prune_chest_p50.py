"""How benchmarks/checkpoints/chest_xray_hybrid_p50.ckpt was made: 50 % channel pruning + 12-epoch recovery.

Run from the repository root: python benchmarks/suites/prune_chest_p50.py [OUT]   (~10 min on 2 cores)
The same from the CLI: `edgeseg prune benchmarks/checkpoints/chest_xray_hybrid.ckpt --data DATA --ratio 0.5
--finetune-epochs 12 --finetune-minutes 15 --out OUT` (and `edgeseg compress CKPT --int8 --prune 0.5
--finetune-epochs 12 --calib DATA` inside a bundle).
"""
import sys

import torch

from edgeseg.checkpoint import load_checkpoint, save_checkpoint
from edgeseg.data import data_root
from edgeseg.evaluation import evaluate_checkpoint
from edgeseg.pruning import calibration_batches, finetune, prune_model

torch.set_num_threads(2)
out = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/checkpoints/chest_xray_hybrid_p50.ckpt"
data = data_root() / "Dataset002_ChestXrayLungs"
model, spec = load_checkpoint("benchmarks/checkpoints/chest_xray_hybrid.ckpt")
calib = calibration_batches(spec, data, num_images=32)                        # train split, seed 0
report = prune_model(model, (1, 1, 256, 256), ratio=0.5, calib_batches=calib)  # BN-scale importance, BN re-estimated
ft = finetune(model, spec, data, epochs=12, time_limit_minutes=15)             # lr: half the training recipe's
final = evaluate_checkpoint(model, spec, data, "val")
print(f"val lung Dice after pruning + recovery: {final['mean']['lung']['dice']:.4f}")
spec.metrics = {"val": {k: v for k, v in final.items() if k != "schema_version"}}
spec.pruning = {"report": report.to_dict(), "finetune": ft}
save_checkpoint(out, model, spec)
