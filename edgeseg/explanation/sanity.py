"""Sanity checks every explanation method must pass before its drift is reported (Adebayo et al., 2018):

- ``identical``: the reference explained a second time gives exactly its first maps (ρ = 1, top-10 % IoU = 1):
  drift 0 for an identical artifact, so any drift reported is the artifact's, not the method's noise;
- ``randomized``: the reference with re-initialised weights gives maps that differ from the trained model's
  (mean ρ below ``RANDOMIZED_MAX_RHO``): a map that does not depend on the weights explains nothing.
"""
from __future__ import annotations

import copy

import numpy as np

from edgeseg.explanation.metrics import map_drift

RANDOMIZED_MAX_RHO = 0.5
IDENTICAL_TOLERANCE = 1e-9


def randomized_model(model, seed: int = 0):
    """A copy of ``model`` with every parameter re-initialised (its layers' own ``reset_parameters``, then the rest
    drawn at random): the cascading-randomization check's end point."""
    import torch

    torch.manual_seed(seed)
    clone = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in clone.modules():
            if hasattr(module, "reset_parameters") and module is not clone:
                module.reset_parameters()
        for name, parameter in clone.named_parameters():
            if "pos_embed" in name or parameter.abs().sum() == 0:
                parameter.normal_(0, 0.02)
    return clone


def _mean_drift(first: list[dict], second: list[dict], method: str) -> dict:
    rhos, ious = [], []
    for a, b in zip(first, second):
        if method not in a or method not in b:
            continue
        for label in range(len(a[method])):
            if not np.any(a[method][label]) and not np.any(b[method][label]):
                continue  # a label absent from the case: no map either way
            drift = map_drift(a[method][label], b[method][label])
            if drift["rank_correlation"] is not None:
                rhos.append(drift["rank_correlation"])
            ious.append(drift["top10_iou"])
    return {"rank_correlation": float(np.mean(rhos)) if rhos else None,
            "top10_iou": float(np.mean(ious)) if ious else None, "maps": len(ious)}


def check_methods(methods: list[str], trained: list[dict], again: list[dict], randomized: list[dict]) -> dict:
    """``{method: {"identical": {...}, "randomized": {...}, "passed": bool, "why": str | None}}`` from the
    reference's maps of the sanity cases (``trained``), the same explained again (``again``) and the
    re-initialised model's (``randomized``)."""
    out = {}
    for method in methods:
        same = _mean_drift(trained, again, method)
        random = _mean_drift(trained, randomized, method)
        why = None
        if not same["maps"]:
            why = "no map to check (no label predicted on the sanity cases)"
        elif (same["rank_correlation"] is not None and same["rank_correlation"] < 1 - IDENTICAL_TOLERANCE) \
                or same["top10_iou"] < 1 - IDENTICAL_TOLERANCE:
            why = (f"the same model explained twice gave different maps (ρ {same['rank_correlation']}, "
                   f"top-10 % IoU {same['top10_iou']:.4f})")
        elif random["rank_correlation"] is not None and random["rank_correlation"] >= RANDOMIZED_MAX_RHO:
            why = (f"maps of the model with random weights match the trained model's (mean ρ "
                   f"{random['rank_correlation']:.2f} ≥ {RANDOMIZED_MAX_RHO}): the map does not depend on the weights")
        out[method] = {"identical": same, "randomized": random, "passed": why is None, "why": why}
    return out
