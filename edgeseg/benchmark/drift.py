"""Drift statistics of an artifact against its FP32 reference: bootstrap intervals and structures that vanish."""
from __future__ import annotations

import warnings

import numpy as np


def bootstrap_mean_ci(values, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of ``values`` (non-finite ones dropped) with a BCa bootstrap ``level`` interval over cases
    (``scipy.stats.bootstrap``, seeded: reproducible). With fewer than 2 cases there is no interval:
    ``low``/``high`` are None and ``n`` says why; equal values give a zero-width interval without warnings."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    mean = float(x.mean()) if x.size else None
    if x.size < 2:
        return {"mean": mean, "low": None, "high": None, "n": int(x.size)}
    if np.ptp(x) == 0:  # every resample has the same mean; BCa's acceleration is 0/0
        return {"mean": mean, "low": mean, "high": mean, "n": int(x.size)}
    from scipy import stats

    for method in ("BCa", "percentile"):  # percentile only where BCa's correction is undefined (nearly all equal)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's DegenerateDataWarning: handled below
            ci = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level, method=method,
                                 **_seeded(stats.bootstrap, seed)).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return {"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": int(x.size)}


def _seeded(fn, seed: int) -> dict:
    """``rng=`` (scipy ≥ 1.15) or ``random_state=`` (older): the same seeded generator either way."""
    import inspect

    key = "rng" if "rng" in inspect.signature(fn).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


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
