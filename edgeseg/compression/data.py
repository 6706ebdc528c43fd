"""``compress`` stage 1, data: the held-back evaluation cases, the calibration set (checked disjoint from them
by content) and the folder of training cases, found from the config and what the checkpoint records."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.calibration import (
    CalibrationSet,
    build_calibration_set,
    check_disjoint,
    check_preprocessing,
    load_calibration,
)
from edgeseg.data.nnunet import NnUNetDataset, data_root
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import check_compatible, held_back_cases, is_training_dataset


@dataclass
class CompressData:
    """What ``compress`` measures and calibrates on. ``held_back``: every held-back validation case of
    ``dataset`` (``eval_ids`` are the first ``--eval-cases`` of them); ``train_dir``: the dataset folder holding
    training cases (pruning statistics and recovery), if any."""

    dataset: NnUNetDataset | None = None
    eval_ids: list[str] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)
    calib: CalibrationSet | None = None
    train_dir: Path | None = None


def _checkpoint_dataset(spec) -> Path:
    name = spec.data.get("dataset")
    if not name:
        raise EdgesegError("the checkpoint records no dataset; pass --calib DATA")
    path = data_root() / name
    if not path.is_dir():
        raise EdgesegError(f"the checkpoint's dataset {name} is not under {data_root()} (set EDGESEG_DATA or pass --calib)")
    return path


def _evaluation(cfg, spec, eval_dir: Path | None) -> CompressData:
    """The evaluation dataset of ``eval_dir`` (checked against the model) and its held-back cases."""
    if eval_dir is None:
        return CompressData()
    dataset = NnUNetDataset(eval_dir)
    check_compatible(spec, dataset)
    held_back = held_back_cases(spec, dataset, cfg.seed)
    return CompressData(dataset, held_back[: cfg.eval_cases] if cfg.eval_cases else held_back, held_back)


def _calibration(cfg, spec, sizes, calib_dir: Path | None, data: CompressData) -> CalibrationSet:
    """The INT8 calibration set: built from ``calib_dir``'s training cases without any held-back image, or the
    ``.npz`` given (its preprocessing checked); disjoint by content from the evaluated cases either way."""
    if cfg.calib is None and not cfg.calib_from_checkpoint:
        raise EdgesegError("INT8 needs calibration data: pass --calib DATA_DIR (or a calibrate .npz), or "
                           "--calib-from-checkpoint to use the training cases recorded in the checkpoint; "
                           "edgeseg never calibrates on random data")
    if calib_dir is not None:  # the evaluated cases are left out by content, whichever folder holds them
        recorded = spec.data.get("train_cases") if is_training_dataset(spec, NnUNetDataset(calib_dir)) else None
        # every held-back image, not only the evaluated ones: bench evaluates the whole split, and datasets repeat
        # an image under several case ids (DDTI: one per nodule, across train and val)
        dataset = data.dataset
        evaluated = set(dataset.case_hashes(data.held_back).values()) if dataset is not None else set()
        calib = build_calibration_set(calib_dir, spec.preprocessing, spec.spatial_dims, cfg.calib_size,
                                      cfg.calib_strategy, cfg.seed, "train", sizes=sizes, case_ids=recorded,
                                      exclude_sha256=evaluated)
    else:
        calib = load_calibration(cfg.calib)
        check_preprocessing(calib, spec.preprocessing, sizes)
    if data.dataset is not None:
        check_disjoint(calib, data.dataset, data.eval_ids)
    return calib


def load_data(cfg, spec, sizes: list[tuple[int, ...]]) -> CompressData:
    """Stage 1: the evaluation dataset and cases (held-back validation), the calibration set at every deployed
    size in ``sizes`` (INT8 only) and the training folder, for a :class:`~edgeseg.compression.pipeline.CompressConfig`."""
    calib_dir = cfg.calib if cfg.calib and Path(cfg.calib).is_dir() else None
    if cfg.calib and not Path(cfg.calib).exists():
        raise EdgesegError(f"{cfg.calib}: calibration data not found")
    if cfg.calib_from_checkpoint:
        calib_dir = _checkpoint_dataset(spec)
    eval_dir = cfg.eval_data or calib_dir
    if eval_dir is None and spec.data.get("dataset") and (data_root() / spec.data["dataset"]).is_dir():
        eval_dir = data_root() / spec.data["dataset"]
    data = _evaluation(cfg, spec, eval_dir)
    dataset = data.dataset
    data.train_dir = calib_dir or (dataset.root if dataset is not None and is_training_dataset(spec, dataset) else None)
    if cfg.precision == "int8":
        data.calib = _calibration(cfg, spec, sizes, calib_dir, data)
    return data


def input_layout(spec, data: CompressData) -> dict:
    """``image_dims``: 2 or 3, the dimensionality of the images the model was given (a 2D model may run on volume
    slices), and for volumes ``axcodes``: their orientation (the checkpoint's record, else the dataset volumes').
    `edgeseg infer` refuses inputs of the other dimensionality and turns volumes to that orientation."""
    source = data.dataset if data.dataset is not None else NnUNetDataset(data.train_dir) if data.train_dir else None
    if source is None:
        return {"image_dims": None, "axcodes": spec.data.get("axcodes")}
    image, geometry = source.load_image(next(iter(source.cases)))
    volumes = image.ndim == 4
    return {"image_dims": image.ndim - 1, "axcodes": (spec.data.get("axcodes") or geometry.axcodes) if volumes else None}
