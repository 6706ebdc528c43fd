"""Every map of one model on one case: the forward-only maps (any runtime), Grad-CAM/++ (PyTorch models), the
deletion/insertion curves of each, and the model's probabilities in the case's own geometry."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgeseg.explanation.maps import MapSettings, occlusion_map, perturbation_curves, rise_map
from edgeseg.explanation.metrics import curve_auc

FORWARD_METHODS = ("occlusion", "rise")


@dataclass
class ModelMaps:
    """One model's maps of one case: ``maps[method]`` is ``(labels, *spatial)``; ``auc[method][kind]`` per label."""

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    auc: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    passes: int = 0
    seconds: float = 0.0


class CountingRunner:
    """A runner that counts the model inputs it was given (the cost of an explanation, in forward passes)."""

    def __init__(self, run):
        self.run, self.inputs = run, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.inputs += len(batch)
        return self.run(batch)


def reference_regions(run, x: np.ndarray, labels: int) -> np.ndarray:
    """``(labels, *spatial)`` bool: where the reference model predicts each foreground label on ``x``."""
    predicted = run(x[None].astype(np.float32))[0].argmax(0)
    return np.stack([predicted == label for label in range(1, labels + 1)])


def case_maps(run, model, x: np.ndarray, regions: np.ndarray, settings: MapSettings, masks: np.ndarray,
              methods: tuple[str, ...]) -> ModelMaps:
    """The maps of ``methods`` (``occlusion``, ``rise``, ``gradcam:<layer>``, ``gradcam++:<layer>``) for one model
    input; ``model`` is the PyTorch module behind ``run`` (Grad-CAM) or None."""
    from edgeseg.explanation.gradcam import GRADIENT_VARIANTS, gradcam_maps

    counting, start, out = CountingRunner(run), time.perf_counter(), ModelMaps()
    if "occlusion" in methods:
        out.maps["occlusion"] = occlusion_map(counting, x, regions, settings)
    if "rise" in methods:
        out.maps["rise"] = rise_map(counting, x, regions, settings, masks)
    variants = tuple(v for v in GRADIENT_VARIANTS if any(m.startswith(f"{v}:") for m in methods))
    if model is not None and variants:
        out.maps.update({m: cam for m, cam in gradcam_maps(model, x, regions, variants).items() if m in methods})
    for method, saliency in out.maps.items():
        curves = perturbation_curves(counting, x, regions, saliency, settings)
        out.auc[method] = {kind: [curve_auc(c) for c in curve] for kind, curve in curves.items()}
    out.passes, out.seconds = counting.inputs, time.perf_counter() - start
    return out

