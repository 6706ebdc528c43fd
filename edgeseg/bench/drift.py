"""Drift statistics of an artifact against its FP32 reference: bootstrap intervals and structures that vanish."""
from __future__ import annotations

import numpy as np


def bootstrap_mean_ci(values, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of ``values`` with a percentile-bootstrap ``level`` interval over cases (seeded, reproducible)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    means = x[np.random.default_rng(seed).integers(0, x.size, (n_resamples, x.size))].mean(1)
    tail = (1 - level) / 2 * 100
    return {"mean": float(x.mean()), "low": float(np.percentile(means, tail)),
            "high": float(np.percentile(means, 100 - tail)), "n": int(x.size)}


def structure_changes(reference: np.ndarray, artifact: np.ndarray, label_names: list[str]) -> list[dict]:
    """Labels present in the reference mask but absent from the artifact's (``vanished``), or the reverse
    (``appeared``): the failures a mean Dice hides for small structures."""
    changes = []
    for value, name in enumerate(label_names[1:], start=1):
        in_ref, in_art = bool((reference == value).any()), bool((artifact == value).any())
        if in_ref != in_art:
            changes.append({"label": name, "change": "vanished" if in_ref else "appeared",
                            "reference_voxels": int((reference == value).sum()),
                            "artifact_voxels": int((artifact == value).sum())})
    return changes
