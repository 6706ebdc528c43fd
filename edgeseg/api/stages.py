"""The stages before a bundle, from Python: ``train``, ``evaluate``, ``prune``, ``calibrate`` — thin keyword
wrappers over the functions the CLI commands call."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.api.options import check_options, loaded_model, model_spec
from edgeseg.errors import UsageError


@dataclass
class TrainResult:
    """A trained checkpoint: ``metrics`` are Dice/IoU per label on the validation cases, ``training`` the record
    kept in the checkpoint (plan, ``history`` per epoch, ``stop_reason``, ``best_epoch``)."""

    checkpoint: Path
    metrics: dict
    training: dict

    @property
    def history(self) -> list[dict]:
        return self.training["history"]


def train(data: str | os.PathLike, *, out: str | os.PathLike, force: bool = False, **options: Any) -> TrainResult:
    """Train a model on the nnU-Net dataset ``data`` and save the best checkpoint (by validation Dice) to ``out``
    (``edgeseg train``). Options: the fields of :class:`edgeseg.training.config.TrainConfig` (``arch``, ``size``,
    ``epochs``, ``time_limit_minutes``, ``max_steps``, ``arch_kwargs``, …). An existing ``out`` is replaced only
    with ``force`` and only if edgeseg wrote it."""
    from edgeseg.checkpoint import read_spec
    from edgeseg.overwrite import check_overwrite
    from edgeseg.training.trainer import TrainConfig
    from edgeseg.training.trainer import train as run_train

    check_options(options, set(TrainConfig.__dataclass_fields__) - {"data"}, "train()")
    check_overwrite(out, force=force)
    path, metrics = run_train(TrainConfig(data=str(data), **options), out)
    return TrainResult(Path(path), metrics, read_spec(path).training)


@dataclass
class Evaluation:
    """``dice``: mean Dice per label; ``result``: what ``edgeseg evaluate --json`` prints (IoU, per case, …)."""

    dice: dict[str, float]
    result: dict


def evaluate(model, data: str | os.PathLike, *, split: str = "val", spec=None) -> Evaluation:
    """Score a checkpoint (path, or loaded model with ``spec=``) on ``split`` of ``data``: ``val`` = the
    checkpoint's held-back cases, ``train``, ``all``, or ``test`` (imagesTs/labelsTs)."""
    from edgeseg.evaluation import evaluate_checkpoint, evaluation_document

    module, spec = loaded_model(model, spec)
    result = evaluation_document(evaluate_checkpoint(module, spec, data, split))
    return Evaluation({label: scores["dice"] for label, scores in result["mean"].items()}, result)


@dataclass
class PruneResult:
    """The pruned checkpoint and the pruning report (MACs and parameters before/after, Dice after each step)."""

    checkpoint: Path
    report: dict


def prune(model, data: str | os.PathLike, *, out: str | os.PathLike, ratio: float | None = None,
          macs: float | None = None, finetune_epochs: int = 0, finetune_minutes: float | None = None,
          calib_images: int = 32, align: int = 0, force: bool = False, spec=None) -> PruneResult:
    """Structured pruning (``edgeseg prune``) of a checkpoint (path, or loaded model with ``spec=``, pruned in
    place): ``ratio`` of the channels removed from every prunable group, or down to ``macs`` (a share of the
    MACs), kept widths rounded to multiples of ``align`` (16 for INT8 targets; 0: off); BatchNorm re-estimated on
    training images of ``data``, optional recovery fine-tune; saved to ``out``."""
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.overwrite import check_overwrite
    from edgeseg.pruning.pipeline import PruneSettings, prune_on_dataset

    check_overwrite(out, force=force)
    module, spec = loaded_model(model, spec)
    if align < 0:
        raise UsageError(f"align must be 0 (off) or a positive channel multiple, not {align}")
    settings = PruneSettings(ratio, macs, finetune_epochs, finetune_minutes, calib_images, align)
    report = prune_on_dataset(module, spec, settings, data)
    return PruneResult(save_checkpoint(out, module, spec), report)


def calibrate(data: str | os.PathLike | Iterable, checkpoint=None, *, spec=None, size: int = 64,
              strategy: str = "stratified", split: str = "train", seed: int = 0,
              sizes: list[tuple[int, ...]] | None = None, transform: Callable | None = None,
              out: str | os.PathLike | None = None, force: bool = False):
    """A calibration set (:class:`~edgeseg.CalibrationSet`) preprocessed for ``checkpoint`` (a path, or a loaded
    model with ``spec=``, or ``spec=`` alone): from a dataset folder (``size`` samples of ``split`` chosen by
    ``strategy``, as ``edgeseg calibrate``) or from an iterable of raw images (the first ``size``, ``transform``
    applied first). Also written to ``out`` (``.npz``) when given."""
    from edgeseg.calibration import build_calibration_set, calibration_from_arrays, save_calibration
    from edgeseg.overwrite import check_overwrite

    if checkpoint is None and spec is None:
        raise UsageError("calibrate() needs the checkpoint (or spec=) whose preprocessing the inputs get")
    if transform is not None and isinstance(data, (str, os.PathLike)):
        raise UsageError("transform= applies to calibration images given as an iterable of arrays")
    if out is not None:
        check_overwrite(out, force=force)
    spec = spec if checkpoint is None else model_spec(checkpoint, spec)
    if isinstance(data, (str, os.PathLike)):
        calib = build_calibration_set(data, spec.preprocessing, spec.spatial_dims, size, strategy, seed, split,
                                      sizes=sizes)
    else:
        calib = calibration_from_arrays(data, spec, sizes, size, transform)
    if out is not None:
        save_calibration(out, calib)
    return calib
