"""Segmentation metrics: the one Dice implementation of the project (plain numpy)."""
from __future__ import annotations

import numpy as np


def overlap_counts(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` array of (intersection, |pred|, |target|) voxel counts per class."""
    pred, target = pred.ravel(), target.ravel()
    joint = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    inter = np.diag(joint)
    return np.stack([inter, joint.sum(0), joint.sum(1)], axis=1).astype(np.int64)


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice per row of (intersection, |pred|, |target|); both empty counts as a perfect 1.0."""
    inter, p, t = counts[..., 0].astype(float), counts[..., 1].astype(float), counts[..., 2].astype(float)
    denom = p + t
    return np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)


def iou_from_counts(counts: np.ndarray) -> np.ndarray:
    """IoU per row of (intersection, |pred|, |target|); both empty counts as 1.0."""
    inter, p, t = counts[..., 0].astype(float), counts[..., 1].astype(float), counts[..., 2].astype(float)
    union = p + t - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def case_scores(pred: np.ndarray, target: np.ndarray, label_names: list[str], full: bool = False,
                spacing: tuple[float, ...] | None = None) -> dict[str, dict[str, float]]:
    """Dice and IoU per foreground label, plus ``foreground`` (any label > 0, e.g. whole tumour).

    ``full`` adds sensitivity, specificity (NaN where undefined) and HD95 in ``spacing`` units (``inf`` when
    exactly one of the two masks is empty).
    """
    n = len(label_names)
    pred, target = pred.astype(np.int64), target.astype(np.int64)
    counts = overlap_counts(pred, target, n)
    fg = overlap_counts((pred > 0).astype(np.int64), (target > 0).astype(np.int64), 2)[1]
    rows = [(label_names[c], counts[c], c) for c in range(1, n)] + ([("foreground", fg, None)] if n > 2 else [])
    scores = {}
    for name, row, value in rows:
        scores[name] = {"dice": float(dice_from_counts(row)), "iou": float(iou_from_counts(row))}
        if full:
            sens, spec = sensitivity_specificity(row, pred.size)
            p, t = (pred == value, target == value) if value is not None else (pred > 0, target > 0)
            scores[name].update(sensitivity=float(sens), specificity=float(spec), hd95=hd95(p, t, spacing))
    return scores


def headline_label(label_names: list[str]) -> str:
    """The label a one-number summary uses: ``foreground`` (the union :func:`case_scores` adds) when there
    are several structures, else the only one."""
    return "foreground" if len(label_names) > 2 else label_names[1]


def mean_scores(per_case: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of :func:`case_scores` results over cases, per label and metric; NaN and ``inf`` values (undefined
    sensitivity, HD95 with one empty mask) are left out of the mean (NaN when no case has a finite value)."""
    if not per_case:
        return {}
    out = {}
    for label in per_case[0]:
        out[label] = {}
        for metric in per_case[0][label]:
            values = np.asarray([c[label][metric] for c in per_case], dtype=float)
            finite = values[np.isfinite(values)]
            out[label][metric] = float(finite.mean()) if finite.size else float("nan")
    return out


def undefined_hd95(per_case: list[dict[str, dict[str, float]]]) -> dict[str, int]:
    """Per label, the cases whose HD95 is undefined (exactly one of prediction and ground truth empty)."""
    if not per_case or "hd95" not in next(iter(per_case[0].values()), {}):
        return {}
    return {label: sum(1 for c in per_case if np.isinf(c[label]["hd95"])) for label in per_case[0]}


def sensitivity_specificity(counts: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (intersection, |pred|, |target|) over ``total`` voxels: TP/(TP+FN) and TN/(TN+FP).

    Undefined ratios (no positives for sensitivity, no negatives for specificity) are NaN.
    """
    inter, p, t = (counts[..., i].astype(float) for i in range(3))
    tn = total - p - t + inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t > 0, inter / t, np.nan), np.where(total - t > 0, tn / (total - t), np.nan)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour outside it (image borders count as outside)."""
    padded = np.pad(mask, 1)
    interior = padded.copy()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            interior &= np.roll(padded, shift, axis=axis)
    return (mask & ~interior[tuple(slice(1, -1) for _ in range(mask.ndim))])


def _union_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    return idx.min(0), idx.max(0)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two boolean masks, in the units
    of ``spacing`` (voxel size per axis; default 1). Both empty: 0.0; exactly one empty: ``inf``.

    The larger of the two directed 95th percentiles (as MONAI computes it), so a spurious blob counts.
    """
    from scipy.ndimage import distance_transform_edt

    pred, target = pred.astype(bool), target.astype(bool)
    if not pred.any() and not target.any():
        return 0.0
    if not pred.any() or not target.any():
        return float("inf")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing has {len(spacing)} values for a {pred.ndim}D mask")
    # exact on the bounding box of both masks: every surface voxel lies inside it
    box = tuple(slice(max(0, lo - 1), hi + 2) for lo, hi in zip(*_union_bounds(pred | target)))
    sp, st = _surface(pred[box]), _surface(target[box])
    to_target = distance_transform_edt(~st, sampling=spacing)[sp]
    to_pred = distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))
