"""Forward-only saliency maps of a segmentation model: occlusion sensitivity and RISE random masking.

They need nothing but forward passes, so the same code explains the FP32 model and every deployed artifact in its
own runtime (an INT8 graph has no gradients). A map answers, per label: how much does the label's mean probability
over the *reference's* predicted region fall when this part of the input is hidden? The region is fixed per case
and label (the FP32 model's mask), so every artifact is asked the same question. Hidden means set to 0 in the model
input space, which after z-score normalization is the image's mean intensity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]  # (B, C, *spatial) float32 model input → (B, classes, *spatial) logits


@dataclass(frozen=True)
class MapSettings:
    """How the forward-only maps are made; every value is recorded with the results."""

    occlusion_grid: int = 8  # patches per spatial axis (non-overlapping): grid**dims forward passes
    rise_masks: int = 128  # random masks per case
    rise_cells: int = 8  # cells per axis of a RISE mask before upsampling
    rise_keep: float = 0.5  # probability a cell is kept
    curve_steps: int = 8  # deletion/insertion: share of pixels perturbed in this many equal steps
    batch: int = 8  # model inputs per runner call
    seed: int = 0

    def passes(self, dims: int, labels: int) -> int:
        """Forward passes per case at most (every label predicted): both maps and their deletion/insertion curves."""
        return 1 + self.occlusion_grid**dims + self.rise_masks + labels * 2 * 2 * (self.curve_steps + 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class axis (1) of ``(B, classes, *spatial)``, in float64 for stable small differences."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


def region_scores(run: Runner, inputs: np.ndarray, regions: np.ndarray, batch: int) -> np.ndarray:
    """``(N, labels)``: per input, each label's mean probability over its region. ``regions`` is ``(labels,
    *spatial)`` bool (label 1… of the reference's mask)."""
    weights = regions.reshape(len(regions), -1).astype(np.float64)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1)
    out = []
    for start in range(0, len(inputs), batch):
        probs = softmax(run(np.ascontiguousarray(inputs[start:start + batch], dtype=np.float32)))
        flat = probs[:, 1:1 + len(regions)].reshape(len(probs), len(regions), -1)
        out.append(np.einsum("blp,lp->bl", flat, weights))
    return np.concatenate(out)


def _patch_slices(shape: tuple[int, ...], grid: int) -> list[tuple[slice, ...]]:
    edges = [np.linspace(0, n, min(grid, n) + 1).round().astype(int) for n in shape]
    cells = np.stack(np.meshgrid(*[np.arange(len(e) - 1) for e in edges], indexing="ij"), -1).reshape(-1, len(shape))
    return [tuple(slice(edges[a][i], edges[a][i + 1]) for a, i in enumerate(cell)) for cell in cells]


def occlusion_map(run: Runner, x: np.ndarray, regions: np.ndarray, settings: MapSettings) -> np.ndarray:
    """``(labels, *spatial)``: the fall of each label's region score when each grid patch is set to 0."""
    base = region_scores(run, x[None], regions, 1)[0]
    patches = _patch_slices(x.shape[1:], settings.occlusion_grid)
    occluded = np.repeat(x[None], len(patches), axis=0)
    for i, patch in enumerate(patches):
        occluded[(i, slice(None), *patch)] = 0
    drops = base[None] - region_scores(run, occluded, regions, settings.batch)
    saliency = np.zeros((len(regions), *x.shape[1:]), np.float64)
    for i, patch in enumerate(patches):
        saliency[(slice(None), *patch)] = drops[i][(slice(None), *[None] * len(patch))]
    return saliency


def rise_masks(shape: tuple[int, ...], settings: MapSettings) -> np.ndarray:
    """``(N, *shape)`` float32 smooth random masks (RISE: a coarse random grid, upsampled, randomly shifted);
    seeded, so every artifact of a case is probed with the same masks."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(settings.seed)
    cells, dims = settings.rise_cells, len(shape)
    cell = [int(np.ceil(n / cells)) for n in shape]
    grid = (rng.random((settings.rise_masks, 1, *[cells] * dims)) < settings.rise_keep).astype(np.float32)
    big = [(cells + 1) * c for c in cell]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
    up = F.interpolate(torch.from_numpy(grid), size=big, mode=mode, align_corners=False).numpy()[:, 0]
    shifts = [rng.integers(0, c, settings.rise_masks) for c in cell]
    return np.stack([up[(i, *[slice(s[i], s[i] + n) for s, n in zip(shifts, shape)])]
                     for i in range(settings.rise_masks)])


def rise_map(run: Runner, x: np.ndarray, regions: np.ndarray, settings: MapSettings,
             masks: np.ndarray | None = None) -> np.ndarray:
    """``(labels, *spatial)``: RISE importance, the masks weighted by the region score each one leaves, centred on
    the mean score (without centring, the masks' uneven coverage alone would shape the map of any model)."""
    masks = rise_masks(x.shape[1:], settings) if masks is None else masks
    scores = np.concatenate([region_scores(run, x[None] * masks[i:i + settings.batch, None], regions, settings.batch)
                             for i in range(0, len(masks), settings.batch)])
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    return ((scores - scores.mean(axis=0)).T @ flat).reshape(len(regions), *x.shape[1:]) / (len(masks) * settings.rise_keep)


def perturbation_curves(run: Runner, x: np.ndarray, regions: np.ndarray, saliency: np.ndarray,
                        settings: MapSettings) -> dict[str, np.ndarray]:
    """Deletion and insertion curves ``(labels, steps + 1)`` of each label's score as the most salient pixels (by
    that label's ``saliency``) are set to 0 (deletion) or restored into an all-0 input (insertion), in equal steps."""
    steps = settings.curve_steps
    fractions = np.linspace(0, 1, steps + 1)
    curves = {"deletion": np.zeros((len(regions), steps + 1)), "insertion": np.zeros((len(regions), steps + 1))}
    for label in range(len(regions)):
        if not regions[label].any():
            continue  # the label is not predicted on this case: no score to follow
        order = np.argsort(-saliency[label].ravel(), kind="stable")
        ranks = np.empty_like(order)
        ranks[order] = np.arange(order.size)
        inputs = []
        for kind in curves:
            for f in fractions:
                top = (ranks < round(f * order.size)).reshape(x.shape[1:])
                keep = ~top if kind == "deletion" else top
                inputs.append(x * keep[None])
        scores = region_scores(run, np.stack(inputs), regions[label:label + 1], settings.batch)[:, 0]
        curves["deletion"][label], curves["insertion"][label] = scores[:steps + 1], scores[steps + 1:]
    return curves
