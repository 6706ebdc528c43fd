"""The damage series' table (issue L): Dice drift and explanation drift of each damaged chest model side by side,
from the explain results explain_damage_l.sh wrote. Usage: python explain_damage_table.py OUT > damage.md"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# variant folder → (what was done, the artifact whose drift is shown)
VARIANTS = {
    "int8_default": ("INT8, edgeseg defaults (fragile-ops preset float, 64 calibration images)", "x86-onnxruntime-int8"),
    "int8_calib1": ("INT8 calibrated on 1 image", "x86-onnxruntime-int8"),
    "int8_no_preset": ("INT8 without the fragile-ops preset (everything quantized)", "x86-onnxruntime-int8"),
    "p50_no_recovery": ("50 % channels pruned, BN recalibrated, no fine-tune (FP32)", "x86-onnxruntime-fp32"),
}


def _ci(stats: dict | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    return f"{stats['mean']:.{digits}f} [{stats['low']:.{digits}f}, {stats['high']:.{digits}f}]"


def _row(name: str, what: str, artifact: str, result: dict) -> str:
    entry = result["artifacts"].get(artifact)
    if entry is None:
        return f"| {what} | not explained: {result['not_explained'].get(artifact, '?')} | | | | | |"
    label = result["labels"][0]
    methods = entry["methods"]
    rise, occlusion = methods.get("rise", {}).get(label), methods.get("occlusion", {}).get(label)
    attention = entry.get("attention") or {}
    gates = min((row["rank_correlation"]["mean"] for row in attention.values()
                 if row["rank_correlation"]["mean"] is not None), default=None)
    worst = (rise or occlusion or {}).get("worst", [{}])[0]
    dice = (entry["dice_drift_points"] or {}).get(label)
    return (f"| {what} | {_ci(dice, 2)} | {_ci(rise and rise['rank_correlation'])} | "
            f"{_ci(rise and rise['top10_iou'])} | {_ci(occlusion and occlusion['rank_correlation'])} | "
            f"{'–' if gates is None else f'{gates:.3f}'} | {worst.get('case', '–')} "
            f"({worst.get('rank_correlation', float('nan')):.3f}) | {entry['seconds']:.0f} |")


def main(out: Path) -> None:
    print("# Damage series: chest X-ray hybrid, 32 val cases, ONNX Runtime\n")
    print("Each variant explained against the FP32 PyTorch model (occlusion grid 8, 128 RISE masks, seed 0). "
          "ΔDice: artifact − reference against ground truth, points. ρ / IoU: of the artifact's map with the "
          "reference's, mean over cases [95 % bootstrap]. Gates: the lowest mean ρ over the four attention gates.\n")
    print("| variant | ΔDice pts | RISE ρ | RISE top-10 % IoU | occlusion ρ | gates ρ (min) | worst case (ρ) | s |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for name, (what, artifact) in VARIANTS.items():
        path = out / name / "explain.json"
        if not path.is_file():
            print(f"| {what} | not run ({path} missing) | | | | | | |")
            continue
        results[name] = json.loads(path.read_text())
        print(_row(name, what, artifact, results[name]))
    pruned = results.get("p50_no_recovery", {}).get("artifacts", {}).get("torch-fp32")
    if pruned:
        label = results["p50_no_recovery"]["labels"][0]
        print("\nGrad-CAM of the pruned PyTorch model against the unpruned one: " + ", ".join(
            f"{method} ρ {_ci(rows[label]['rank_correlation'])}" for method, rows in pruned["methods"].items()
            if method.startswith("gradcam") and label in rows))
    sane = results.get("int8_default", {}).get("sanity", {})
    print("\nSanity (the FP32 model against itself, and with random weights): " + "; ".join(
        f"{m}: identical ρ {c['identical']['rank_correlation']}, random ρ {c['randomized']['rank_correlation']:.2f}"
        f"{'' if c['passed'] else ' (withheld)'}" for m, c in sane.items() if c['randomized']['rank_correlation'] is not None))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/explain_damage_l"))
