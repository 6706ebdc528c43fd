"""Evaluate a checkpoint on a dataset split: per-case and mean Dice/IoU in the original label geometry."""
from __future__ import annotations

import contextlib
import time

import numpy as np

from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.errors import EdgesegError, InputError
from edgeseg.inference import Predictor, predict_mask, torch_predictor
from edgeseg.metrics import case_scores, mean_scores
from edgeseg.progress import track

EVAL_SCHEMA_VERSION = 1


def evaluate_cases(predict: Predictor, spec, dataset: NnUNetDataset, case_ids: list[str],
                   description: str = "evaluate") -> dict:
    """Score ``predict`` on ``case_ids``; returns ``{"mean": {label: {dice, iou}}, "cases": {...}}``."""
    per_case, start = {}, time.perf_counter()
    for cid in track(case_ids, description):
        case = dataset.load(cid)
        if case.label is None:
            raise InputError(f"{dataset.labels_dir}: no label for case {cid}; evaluation needs labels")
        per_case[cid] = case_scores(predict_case(predict, spec, dataset, case), case.label, spec.label_names)
    return {"schema_version": EVAL_SCHEMA_VERSION, "dataset": dataset.name, "num_cases": len(case_ids),
            "mean": mean_scores(list(per_case.values())), "cases": per_case,
            "seconds": round(time.perf_counter() - start, 2)}


def evaluate_checkpoint(model, spec, data_dir, split: str = "val") -> dict:
    """Evaluate a loaded model on ``split`` of the dataset at ``data_dir`` (``test``: its imagesTs/labelsTs)."""
    dataset = NnUNetDataset(data_dir, test=split == "test")
    check_compatible(spec, dataset)
    result = evaluate_cases(torch_predictor(model), spec, dataset,
                            split_cases(spec, dataset, split, spec.training.get("seed", 0)))
    return {**result, "split": split}


@contextlib.contextmanager
def naming_case_file(dataset: NnUNetDataset, case_id: str):
    """An :class:`EdgesegError` raised inside (e.g. a 2D image for a 3D model) names the case's image file."""
    try:
        yield
    except EdgesegError as exc:
        raise InputError(f"{dataset.cases[case_id].image_files[0]}: {exc}") from None


def predict_case(predict: Predictor, spec, dataset: NnUNetDataset, case) -> np.ndarray:
    """The label map of a loaded case; an error names the case's file."""
    with naming_case_file(dataset, case.case_id):
        return predict_mask(predict, case.image, spec.preprocessing, spec.spatial_dims, spacing=case.geometry.spacing)


def is_training_dataset(spec, dataset: NnUNetDataset) -> bool:
    """Whether ``dataset`` holds the cases the checkpoint was trained and validated on: every recorded case is
    there, and the folder has the recorded name or, under any name, the recorded content fingerprint."""
    recorded = [*spec.data.get("train_cases", []), *spec.data.get("val_cases", [])]
    if dataset.test or not recorded or any(c not in dataset.cases for c in recorded):
        return False
    return dataset.name == spec.data.get("dataset") or dataset.fingerprint(recorded) == spec.data.get("fingerprint")


def held_back_cases(spec, dataset: NnUNetDataset, seed: int = 0) -> list[str]:
    """The validation cases the checkpoint recorded when ``dataset`` is its training dataset, else ``val``."""
    if spec.data.get("val_cases") and is_training_dataset(spec, dataset):
        return list(spec.data["val_cases"])
    return dataset.split("val", seed)


def split_cases(spec, dataset: NnUNetDataset, split: str, seed: int = 0) -> list[str]:
    """Case ids of ``split``: ``val`` = the checkpoint's held-back cases, ``test`` = every test case."""
    return held_back_cases(spec, dataset, seed) if split == "val" else dataset.split(split, seed)


def check_compatible(spec, dataset: NnUNetDataset) -> None:
    """Refuse data whose channels or labels do not fit the model."""
    if len(dataset.channel_names) != spec.in_channels:
        raise InputError(f"{dataset.root}: {len(dataset.channel_names)} channels "
                           f"({', '.join(dataset.channel_names)}), the model expects {spec.in_channels} "
                           f"({', '.join(spec.preprocessing.channel_names)})")
    if dataset.num_classes > spec.num_classes:
        raise InputError(f"{dataset.root}: labels {dataset.label_names} do not fit the model's {spec.label_names}")


def compare_predictors(predictors: dict[str, Predictor], reference: str, spec, dataset: NnUNetDataset,
                       case_ids: list[str], description: str = "compare", full: bool = False) -> dict[str, dict]:
    """Score several predictors on the same cases: against ground truth, and drift and agreement against
    ``reference`` (agreement needs no labels, so it is all an unlabelled dataset gets).

    Returns ``{name: {"mean": {label: {dice, iou, …}} | None, "drift": {label: mean ΔDice} | None,
    "drift_ci95", "agreement": {label: mean Dice against the reference's masks}, "worst": {label: (case, ΔDice)},
    "structure_changes", "hd95_undefined", "cases"}}``. ``full`` adds sensitivity, specificity and HD95 (in the
    image's spacing units).
    """
    from edgeseg.benchmark.drift import bootstrap_mean_ci, structure_changes
    from edgeseg.metrics import undefined_hd95

    per_case = {name: {} for name in predictors}
    agreement = {name: {} for name in predictors}
    changes: dict[str, list] = {name: [] for name in predictors}
    labelled = True
    for cid in track(case_ids, description):
        case = dataset.load(cid)
        labelled &= case.label is not None
        masks = {name: predict_case(p, spec, dataset, case) for name, p in predictors.items()}
        for name, mask in masks.items():
            if case.label is not None:
                per_case[name][cid] = case_scores(mask, case.label, spec.label_names, full, case.geometry.spacing)
            agreement[name][cid] = case_scores(mask, masks[reference], spec.label_names)
            changes[name] += [{"case": cid, **c} for c in structure_changes(masks[reference], mask, spec.label_names)]
    out = {}
    for name in predictors:
        result = {"mean": None, "drift": None, "drift_ci95": None, "worst": None, "hd95_undefined": {},
                  "agreement": {lab: s["dice"] for lab, s in mean_scores(list(agreement[name].values())).items()},
                  "structure_changes": changes[name], "cases": per_case[name] if labelled else {}}
        if labelled and case_ids:
            ref = per_case[reference]
            deltas = {lab: [(cid, per_case[name][cid][lab]["dice"] - ref[cid][lab]["dice"]) for cid in case_ids]
                      for lab in ref[case_ids[0]]}
            result.update(mean=mean_scores(list(per_case[name].values())),
                          hd95_undefined=undefined_hd95(list(per_case[name].values())),
                          drift={lab: float(np.mean([d for _, d in ds])) for lab, ds in deltas.items()},
                          drift_ci95={lab: bootstrap_mean_ci([d for _, d in ds]) for lab, ds in deltas.items()},
                          worst={lab: min(ds, key=lambda cd: cd[1]) for lab, ds in deltas.items()})
        out[name] = result
    return out


def evaluation_document(result: dict) -> dict:
    """An evaluation result as the JSON edgeseg writes (``evaluate --json`` / ``--out``, the demo's ``evaluate.json``)."""
    return {"schema": "edgeseg-evaluation", "schema_version": 1, **result}
