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


def case_scores(pred: np.ndarray, target: np.ndarray, label_names: list[str]) -> dict[str, dict[str, float]]:
    """Dice and IoU per foreground label, plus ``foreground`` (any label > 0, e.g. whole tumour)."""
    n = len(label_names)
    counts = overlap_counts(pred.astype(np.int64), target.astype(np.int64), n)
    fg = overlap_counts((pred > 0).astype(np.int64), (target > 0).astype(np.int64), 2)[1]
    dice, iou = dice_from_counts(counts), iou_from_counts(counts)
    scores = {label_names[c]: {"dice": float(dice[c]), "iou": float(iou[c])} for c in range(1, n)}
    if n > 2:
        scores["foreground"] = {"dice": float(dice_from_counts(fg)), "iou": float(iou_from_counts(fg))}
    return scores


def mean_scores(per_case: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of :func:`case_scores` results over cases, per label and metric."""
    if not per_case:
        return {}
    return {label: {m: float(np.mean([c[label][m] for c in per_case])) for m in per_case[0][label]}
            for label in per_case[0]}
