"""Evaluate a checkpoint on a dataset split: per-case and mean Dice/IoU in the original label geometry."""
from __future__ import annotations

import time

from .data.nnunet import NnUNetDataset
from .errors import EdgesegError
from .inference import Predictor, predict_mask, torch_predictor
from .metrics import case_scores, mean_scores
from .progress import track

EVAL_SCHEMA_VERSION = 1


def evaluate_cases(predict: Predictor, spec, dataset: NnUNetDataset, case_ids: list[str],
                   description: str = "evaluate") -> dict:
    """Score ``predict`` on ``case_ids``; returns ``{"mean": {label: {dice, iou}}, "cases": {...}}``."""
    per_case, start = {}, time.perf_counter()
    for cid in track(case_ids, description):
        case = dataset.load(cid)
        pred = predict_mask(predict, case.image, spec.preprocessing, spec.spatial_dims)
        per_case[cid] = case_scores(pred, case.label, spec.label_names)
    return {"schema_version": EVAL_SCHEMA_VERSION, "dataset": dataset.name, "num_cases": len(case_ids),
            "mean": mean_scores(list(per_case.values())), "cases": per_case,
            "seconds": round(time.perf_counter() - start, 2)}


def evaluate_checkpoint(model, spec, data_dir, split: str = "val") -> dict:
    """Evaluate a loaded model on ``split`` of the dataset at ``data_dir``."""
    dataset = NnUNetDataset(data_dir)
    check_compatible(spec, dataset)
    result = evaluate_cases(torch_predictor(model), spec, dataset, dataset.split(split, seed=spec.training.get("seed", 0)))
    return {**result, "split": split}


def check_compatible(spec, dataset: NnUNetDataset) -> None:
    """Refuse data whose channels or labels do not fit the model."""
    if len(dataset.channel_names) != spec.in_channels:
        raise EdgesegError(f"{dataset.root}: {len(dataset.channel_names)} channels "
                           f"({', '.join(dataset.channel_names)}), the model expects {spec.in_channels} "
                           f"({', '.join(spec.preprocessing.channel_names)})")
    if dataset.num_classes > spec.num_classes:
        raise EdgesegError(f"{dataset.root}: labels {dataset.label_names} do not fit the model's {spec.label_names}")
