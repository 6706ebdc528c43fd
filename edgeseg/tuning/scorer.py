"""Scoring quantized variants of one model on a fixed set of tuning cases, quickly and comparably.

The FP32 reference's masks and its Dice against the ground truth are computed once; each variant then
costs one pass of its own runtime over the cases.
"""
from __future__ import annotations

import numpy as np

from edgeseg.benchmark.drift import structure_changes
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import held_back_cases, is_training_dataset
from edgeseg.inference import Predictor, predict_mask
from edgeseg.metrics import case_scores


def tuning_cases(spec, dataset: NnUNetDataset, calibration, split: str = "train", n: int = 16,
                 seed: int = 0, avoid_sha256=frozenset()) -> list[str]:
    """``n`` seeded cases of ``split`` that are neither calibration cases — of a ``CalibrationSet`` by content,
    whatever the folder or case names, or case ids of ``dataset`` — nor the validation cases reported to the
    user (when ``dataset`` is the checkpoint's own, by id and content), nor images in ``avoid_sha256`` (the
    evaluated cases of another folder); asking for ``val`` of that dataset is refused."""
    held_back = set(held_back_cases(spec, dataset)) if is_training_dataset(spec, dataset) else set()
    candidates = dataset.split(split, seed)
    if held_back & set(candidates):
        raise EdgesegError(f"tuning on split {split!r} would tune on the validation cases reported to the user "
                           f"({len(held_back & set(candidates))} overlap); tune on the train split")
    manifest = getattr(calibration, "manifest", None)
    calibrated = set((manifest.get("case_sha256") or {}).values()) if manifest else set()
    by_id = set() if calibrated else set(calibration.case_ids if manifest else calibration or [])  # no hashes: ids
    # by content too: a dataset may repeat a validation image under a training case id (DDTI: one id per nodule)
    avoid = calibrated | set(dataset.case_hashes(sorted(held_back)).values()) | set(avoid_sha256)
    pool = [c for c in candidates if c not in by_id and (not avoid or dataset.case_sha256(c) not in avoid)]
    if not pool:
        raise EdgesegError(f"{dataset.root}: no {split} cases left for tuning once the calibration cases and the "
                           "evaluated images are removed")
    order = np.random.default_rng(seed).permutation(len(pool))
    return sorted(pool[i] for i in order[:n])


class TuningScorer:
    """Dice of a predictor against the ground truth and the reference on the tuning cases, per label."""

    def __init__(self, reference: Predictor, spec, dataset: NnUNetDataset, case_ids: list[str]):
        self.spec, self.case_ids, self.dataset_name = spec, case_ids, dataset.name
        self.cases = [dataset.load(c) for c in case_ids]
        if any(c.label is None for c in self.cases):
            raise EdgesegError("tuning cases need ground-truth labels")
        self.reference_masks = [self._mask(reference, c) for c in self.cases]
        self.reference_scores = [case_scores(m, c.label, spec.label_names)
                                 for m, c in zip(self.reference_masks, self.cases)]

    def _mask(self, predict: Predictor, case) -> np.ndarray:
        return predict_mask(predict, case.image, self.spec.preprocessing, self.spec.spatial_dims,
                            spacing=case.geometry.spacing)

    def score(self, predict: Predictor, indices: list[int] | None = None) -> dict:
        """``{"delta": {label: mean ΔDice vs GT}, "agreement": {label: mean Dice vs the reference's masks},
        "vanished": [(case, label)], "worst": {label: (case, ΔDice)}, "per_case": [mean ΔDice over labels]}``
        on all tuning cases or the ``indices`` among them."""
        labels = list(self.reference_scores[0])
        deltas = {lab: [] for lab in labels}
        agreement = {lab: [] for lab in labels}
        vanished = []
        chosen = range(len(self.cases)) if indices is None else indices
        for i in chosen:
            case, ref_mask, ref = self.cases[i], self.reference_masks[i], self.reference_scores[i]
            mask = self._mask(predict, case)
            own = case_scores(mask, case.label, self.spec.label_names)
            agree = case_scores(mask, ref_mask, self.spec.label_names)
            for lab in labels:
                deltas[lab].append((case.case_id, own[lab]["dice"] - ref[lab]["dice"]))
                agreement[lab].append(agree[lab]["dice"])
            vanished += [(case.case_id, c["label"]) for c in structure_changes(ref_mask, mask, self.spec.label_names)
                         if c["change"] == "vanished"]
        return {"delta": {lab: float(np.mean([d for _, d in ds])) for lab, ds in deltas.items()},
                "agreement": {lab: float(np.mean(v)) for lab, v in agreement.items()},
                "worst": {lab: min(ds, key=lambda cd: cd[1]) for lab, ds in deltas.items()},
                "per_case": [float(np.mean(ds)) for ds in zip(*([d for _, d in v] for v in deltas.values()))],
                "vanished": vanished}
