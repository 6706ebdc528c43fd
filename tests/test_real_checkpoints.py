"""The committed checkpoints, re-scored on the real validation data (slow: run by CI with -m slow)."""
from pathlib import Path

import pytest

from edgeseg.checkpoint import load_checkpoint
from edgeseg.data import NnUNetDataset
from edgeseg.evaluation import evaluate_checkpoint

CHECKPOINTS = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoints"
# checkpoint file, dataset folder, label scored, minimum validation Dice (issue A targets; BraTS has none)
EXPECTED = [
    ("chest_xray_hybrid.ckpt", "Dataset002_ChestXrayLungs", "lung", 0.95),
    ("kvasir_hybrid.ckpt", "Dataset001_KvasirSEG", "polyp", 0.70),
    ("brats_hybrid.ckpt", "Dataset005_BraTSMini", "foreground", 0.55),  # measured 0.60
]


@pytest.mark.slow
@pytest.mark.parametrize("ckpt,dataset,label,minimum", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_committed_checkpoint_reproduces_its_validation_dice(shared_data, ckpt, dataset, label, minimum):
    path = CHECKPOINTS / ckpt
    assert path.is_file(), f"{path} is not committed"
    assert path.stat().st_size <= 10 * 1024 * 1024
    model, spec = load_checkpoint(path)
    ds = NnUNetDataset(shared_data / dataset)
    assert spec.data["fingerprint"] == ds.fingerprint(spec.data["train_cases"] + spec.data["val_cases"])
    assert spec.data["val_cases"] == ds.split("val", seed=spec.training["seed"])
    result = evaluate_checkpoint(model, spec, shared_data / dataset, "val")
    dice = result["mean"][label]["dice"]
    assert dice == pytest.approx(spec.metrics["val"]["mean"][label]["dice"], abs=2e-3)
    assert dice >= minimum
