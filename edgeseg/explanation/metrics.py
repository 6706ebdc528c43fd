"""How far an artifact's explanation moved from the reference's, and how its probabilities are calibrated.

Definitions (recorded in every result):
- ``rank_correlation``: Spearman's ρ between the two maps' pixel values (ties ranked by their mean); 1 = same order.
  Undefined (None) when either map is constant.
- ``top10_iou``: IoU of the pixels at or above each map's 90th percentile.
- ``deletion_auc`` / ``insertion_auc``: area under the label's region score (mean probability, 0–1) as the most
  salient pixels by the model's own map are set to 0 (deletion: low = the map found what matters) or restored into
  an all-0 input (insertion: high = good), over the perturbed share 0…1; the drift is artifact − reference.
- ``ece``: expected calibration error of one label's probability (one against the rest, pixels of all cases pooled,
  10 equal-width bins) against the ground truth; ``entropy``: mean per-pixel entropy of the softmax, in nats.
"""
from __future__ import annotations

import numpy as np

TOP_SHARE = 0.10
ECE_BINS = 10


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's ρ of two maps of the same shape; None when either is constant."""
    from scipy.stats import rankdata

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def top_share(saliency: np.ndarray, share: float = TOP_SHARE) -> np.ndarray:
    """The pixels at or above the map's ``1 - share`` quantile (bool, the map's shape)."""
    return saliency >= np.quantile(saliency, 1 - share)


def top_iou(a: np.ndarray, b: np.ndarray, share: float = TOP_SHARE) -> float:
    """IoU of the two maps' most salient ``share`` of pixels."""
    ta, tb = top_share(a, share), top_share(b, share)
    return float((ta & tb).sum() / max((ta | tb).sum(), 1))


def curve_auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps of the perturbed share from 0 to 1."""
    fractions = np.linspace(0, 1, len(curve))
    return float(np.sum((curve[1:] + curve[:-1]) * np.diff(fractions)) / 2)


def map_drift(reference: np.ndarray, artifact: np.ndarray) -> dict:
    """The map-against-map drift measures of one label and case."""
    return {"rank_correlation": rank_correlation(reference, artifact), "top10_iou": top_iou(reference, artifact)}


class Calibration:
    """Pooled reliability statistics of one model's softmax over many cases, per label (one against the rest)."""

    def __init__(self, labels: int):
        self.count = np.zeros((labels, ECE_BINS))
        self.confidence = np.zeros((labels, ECE_BINS))
        self.hits = np.zeros((labels, ECE_BINS))
        self.entropy_sum, self.pixels = 0.0, 0

    def add(self, probabilities: np.ndarray, truth: np.ndarray) -> None:
        """``probabilities`` ``(classes, *spatial)``, ``truth`` the label map of the same spatial shape."""
        p = np.clip(probabilities.reshape(len(probabilities), -1), 1e-12, 1)
        self.entropy_sum += float(-(p * np.log(p)).sum())
        self.pixels += p.shape[1]
        flat_truth = truth.ravel()
        for label in range(len(self.count)):
            prob = p[label + 1]
            bins = np.minimum((prob * ECE_BINS).astype(int), ECE_BINS - 1)
            self.count[label] += np.bincount(bins, minlength=ECE_BINS)
            self.confidence[label] += np.bincount(bins, prob, minlength=ECE_BINS)
            self.hits[label] += np.bincount(bins, flat_truth == label + 1, minlength=ECE_BINS)

    def summary(self, label_names: list[str]) -> dict:
        """``{"entropy": mean nats, "labels": {name: {"ece", "reliability": [[confidence, accuracy, share]…]}}}``."""
        out = {}
        for label, name in enumerate(label_names):
            n = np.maximum(self.count[label], 1)
            conf, acc = self.confidence[label] / n, self.hits[label] / n
            share = self.count[label] / max(self.count[label].sum(), 1)
            out[name] = {"ece": float(np.sum(share * np.abs(conf - acc))),
                         "reliability": [[round(float(c), 4), round(float(a), 4), round(float(s), 6)]
                                         for c, a, s in zip(conf, acc, share)]}
        return {"entropy": self.entropy_sum / max(self.pixels, 1), "labels": out}
