"""The explain result: drift per artifact, method and label with its spread, the worst cases, the Dice drift and
calibration of the same runs, the sanity checks, and a verdict."""
from __future__ import annotations

import datetime as _dt

import numpy as np

from edgeseg.benchmark.drift import bootstrap_mean_ci
from edgeseg.bundle import MANIFEST
from edgeseg.explanation import metrics as _metrics
from edgeseg.explanation.attention import attention_drift
from edgeseg.util import file_sha256

MEASURES = ("rank_correlation", "top10_iou", "deletion_auc_change", "insertion_auc_change")
SCHEMA, SCHEMA_VERSION = "edgeseg-explain", 1
HEADLINES = ("rise", "occlusion")  # what the verdict and the pictures rank by: the finer map that passed its checks
WORST_SHOWN = 3


def _label_summary(per_case: dict, label: int) -> dict:
    rows = {cid: rows[label] for cid, rows in per_case.items() if rows[label] is not None}
    out = {m: bootstrap_mean_ci([r[m] if r[m] is not None else np.nan for r in rows.values()]) for m in MEASURES}
    ranked = sorted(((r["rank_correlation"] if r["rank_correlation"] is not None else -1.0, cid)
                     for cid, r in rows.items()))
    out["worst"] = [{"case": cid, "rank_correlation": rho, "top10_iou": rows[cid]["top10_iou"]}
                    for rho, cid in ranked[:WORST_SHOWN]]
    out["cases"] = len(rows)
    return out


def _dice_drift(reference, artifact, run, labels: list[str]) -> dict | None:
    """ΔDice points per label (artifact − reference, against ground truth); None when a case has no label."""
    ref, art = reference.scores, artifact.scores
    if not ref or len(ref) < len(run.case_ids):
        return None
    return {lab: bootstrap_mean_ci([100 * (art[c][lab]["dice"] - ref[c][lab]["dice"]) for c in ref]) for lab in labels}


def _artifact_entry(reference, artifact, run, methods, sanity, drift, labels, chosen) -> dict:
    entry = {"seconds": round(artifact.seconds, 2), "forward_passes": artifact.passes, "methods": {},
             "attention": attention_drift(reference.attention, artifact.attention) if artifact.attention else None,
             "dice_drift_points": _dice_drift(reference, artifact, run, labels),
             "calibration": artifact.calibration.summary(labels) if artifact.calibration else None}
    for method in methods:
        if not sanity[method]["passed"]:
            entry["methods"][method] = {"withheld": sanity[method]["why"]}
            continue
        rows = {name: _label_summary(drift[method], i) for i, name in enumerate(labels)
                if name in chosen and drift[method]}
        entry["methods"][method] = {name: row for name, row in rows.items() if row["cases"]}  # predicted somewhere
    return entry


def headline_method(sanity: dict) -> str | None:
    """The forward-only map the verdict and the pictures use: the first of ``HEADLINES`` that passed its checks."""
    return next((m for m in HEADLINES if sanity.get(m, {}).get("passed")), None)


def _verdict(artifacts: dict, sanity: dict, chosen: list[str]) -> str:
    if not artifacts:
        return "no artifact could be explained here: nothing to compare with the reference"
    headline = headline_method(sanity)
    if headline is None:
        return "no forward-only map passed its sanity checks: no drift verdict (see the sanity table)"
    scored = []
    for name, entry in artifacts.items():
        labels = entry["methods"][headline]
        worst = min(((labels[lab]["rank_correlation"]["mean"], lab) for lab in chosen if lab in labels
                     and labels[lab]["rank_correlation"]["mean"] is not None), default=None)
        if worst is not None:
            scored.append((worst[0], name, worst[1], labels[worst[1]]["top10_iou"]["mean"]))
    if not scored:
        return "no label was predicted by the reference on these cases: no explanation to compare"
    scored.sort()
    rho, name, label, iou = scored[0]
    best = scored[-1]
    text = (f"largest explanation drift: {name} on {label} ({headline} map: mean ρ {rho:.3f}, top-10 % IoU {iou:.3f} against "
            f"the reference)")
    if len(scored) > 1:
        text += f"; closest to the reference: {best[1]} (worst label ρ {best[0]:.3f})"
    return text


def summarize(cfg, run, reference, artifacts, skipped, methods, sanity, drift, seconds: float,
              attention: dict | None = None, explained: list[str] | None = None) -> dict:
    """The result dict (schema ``edgeseg-explain`` v1)."""
    labels = list(run.spec.label_names[1:])
    chosen = cfg.labels or labels
    entries = {a.name: _artifact_entry(reference, a, run, methods, sanity, drift[a.name], labels, chosen)
               for a in artifacts}
    settings = cfg.settings
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(run.bundle), "bundle_manifest_sha256": file_sha256(run.bundle / MANIFEST),
        "data": str(run.dataset.root), "dataset": run.dataset.name, "split": cfg.split,
        "cases": list(run.case_ids), "explained_inputs": explained or list(run.case_ids),
        "labels": chosen, "label_names": labels,
        "reference": {"name": reference.name, "seconds": round(reference.seconds, 2),
                      "forward_maps_by": reference.forward_by or reference.name,
                      "forward_passes": reference.passes,
                      "calibration": reference.calibration.summary(labels) if reference.calibration else None},
        "methods": methods, "settings": {**settings.__dict__, "max_passes_per_case": settings.passes(
            run.spec.spatial_dims, len(labels)), "samples_per_volume": cfg.samples_per_volume},
        "definitions": _metrics.__doc__.split("Definitions (recorded in every result):\n", 1)[1].strip(),
        "sanity": sanity, "artifacts": entries, "not_explained": skipped,
        "attention_gates": attention, "headline_method": headline_method(sanity),
        "seconds": round(seconds, 1), "verdict": _verdict(entries, sanity, chosen),
    }
