"""Prune → re-estimate BatchNorm → optional recovery fine-tune, with the Dice after each step.

Shared by ``edgeseg prune`` (a pruned checkpoint) and ``edgeseg compress --prune`` (inside a bundle).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeseg.errors import EdgesegError
from edgeseg.pruning.core import prune_model
from edgeseg.pruning.recovery import calibration_batches, recalibrate_batchnorm


@dataclass
class PruneSettings:
    ratio: float | None = None            # share of channels removed from every prunable group
    target_macs: float | None = None      # or: MACs to reach (<= 1: a share of the current MACs)
    finetune_epochs: int = 0
    finetune_minutes: float | None = None
    calib_images: int = 32                # training images for channel statistics and BatchNorm
    align: int | None = None              # kept widths rounded to multiples of this (SIMD lanes an INT8 kernel fills)


def prune_and_recover(model, spec, settings: PruneSettings, shape: tuple[int, ...], dataset=None,
                      eval_ids: list[str] = (), train_dir: str | Path | None = None,
                      calib_inputs: np.ndarray | None = None) -> dict:
    """Prune ``model`` in place; returns the pruning report with the Dice on ``eval_ids`` before pruning, right
    after it, after BatchNorm re-estimation and after recovery. Images come from the training split of
    ``train_dir`` (needed for fine-tuning), else from ``calib_inputs``."""
    from edgeseg.evaluation import evaluate_cases
    from edgeseg.inference import torch_predictor
    from edgeseg.training.trainer import finetune

    if settings.finetune_epochs and train_dir is None:
        raise EdgesegError("a recovery fine-tune needs labelled training data: pass the dataset folder")
    if train_dir is not None:
        batches = calibration_batches(spec, train_dir, num_images=settings.calib_images)
    elif calib_inputs is not None:
        batches = list(torch.from_numpy(calib_inputs).split(8))
    else:
        raise EdgesegError("pruning needs training images (for channel statistics and BatchNorm): pass calibration data")

    def dice() -> dict | None:
        if dataset is None or not eval_ids:
            return None
        return evaluate_cases(torch_predictor(model), spec, dataset, list(eval_ids), "prune: evaluate")["mean"]

    stages = {"before": dice()}
    report = prune_model(model, shape, ratio=settings.ratio, target_macs=settings.target_macs,
                         calib_batches=batches, recalibrate=False, round_to=settings.align if (settings.align or 0) > 1 else None)
    stages["after_pruning"] = dice()
    recalibrate_batchnorm(model, batches)
    stages["after_bn_recalibration"] = dice()
    recovery = None
    if settings.finetune_epochs:
        recovery = finetune(model, spec, train_dir, epochs=settings.finetune_epochs,
                            time_limit_minutes=settings.finetune_minutes)
        model.cpu().eval()
        stages["after_recovery"] = dice()
    summary = f"ratio {report.ratio:.2f}, MACs ×{report.macs_after / max(report.macs_before, 1):.2f}"
    if report.round_to:
        summary += f", widths in multiples of {report.round_to}"
    return {**report.to_dict(), "summary": summary, "dice": stages, "dice_cases": len(eval_ids),
            "recovery": recovery, "finetune_epochs": settings.finetune_epochs}


def prune_on_dataset(model, spec, settings: PruneSettings, data_dir: str | Path) -> dict:
    """What ``edgeseg prune`` does to a loaded model: prune it in place with the training images of ``data_dir``,
    Dice on the checkpoint's held-back cases after each step; records the report in ``spec.pruning`` and returns it."""
    from edgeseg.data.nnunet import NnUNetDataset
    from edgeseg.evaluation import check_compatible, held_back_cases

    if (settings.ratio is None) == (settings.target_macs is None):
        raise EdgesegError("pass exactly one of a pruning ratio and a MACs target")
    dataset = NnUNetDataset(data_dir)
    check_compatible(spec, dataset)
    eval_ids = held_back_cases(spec, dataset, spec.training.get("seed", 0))
    report = prune_and_recover(model, spec, settings, (1, spec.in_channels, *spec.preprocessing.size), dataset,
                               eval_ids, data_dir)
    spec.pruning = {"report": report}
    return report
