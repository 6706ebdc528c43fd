"""nnU-Net v2 trained model folders (``<Trainer>__<Plans>__<configuration>`` with ``plans.json``, ``dataset.json``
and ``fold_N/checkpoint_final.pth``). The network is rebuilt from the plan (the ``nnunet:`` family, deep
supervision off), the weights read from nnU-Net's checkpoint pickle with ``torch.load(weights_only=True)`` and
an allow-list of the few non-tensor types it holds, and the preprocessing taken from the plan and the dataset
fingerprint: the normalization scheme, the crop to non-zero, the target spacing, the patch and nnU-Net's
Gaussian sliding window (:mod:`edgeseg.data.native`). One fold per import (``fold``); mirroring TTA off unless
``mirroring`` (then recorded in the spec, so every artifact's inference runs it and bench times it)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.importers.base import Imported, Importer, ImportRequest
from edgeseg.importers.registry import register_importer
from edgeseg.importers.weights import load_into, source_files
from edgeseg.validation import JSON_ERRORS

DATA_RESAMPLING = ("resample_data_or_seg_to_shape", {"is_seg": False, "order": 3, "order_z": 0,
                                                     "force_separate_z": None})
VOLUME_READERS = ("SimpleITKIO", "NibabelIO")  # both read a NIfTI's voxels as (z, y, x), unreoriented
PROBABILITY_RESAMPLING = ("resample_data_or_seg_to_shape", {"is_seg": False, "order": 1, "order_z": 0,
                                                            "force_separate_z": None})


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, *JSON_ERRORS) as exc:
        raise EdgesegError(f"{path}: unreadable JSON ({str(exc)[:120]})") from None
    if not isinstance(value, dict):
        raise EdgesegError(f"{path}: expected a JSON object")
    return value


def _folds(folder: Path) -> dict[str, Path]:
    return {p.name.removeprefix("fold_"): p / "checkpoint_final.pth" for p in sorted(folder.glob("fold_*"))
            if (p / "checkpoint_final.pth").is_file()}


def _model_folder(source: Path) -> Path | None:
    """The trained model folder of ``source`` (itself, or the parent of a ``fold_N`` folder)."""
    for folder in (source, source.parent) if source.name.startswith("fold_") else (source,):
        if (folder / "plans.json").is_file() and (folder / "dataset.json").is_file() and _folds(folder):
            return folder
    return None


def read_checkpoint(path: Path) -> dict:
    """nnU-Net's ``checkpoint_final.pth`` without running code: tensors and plain values, plus the numpy scalar
    and torch.device types nnU-Net's trainer stores in its log and init arguments; anything else is refused."""
    import numpy as np
    import torch
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar

    # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core: both spellings of the same two functions
    allowed = [torch.device, np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"),
               *{type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")}]
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = next((line for line in str(exc).splitlines() if "GLOBAL" in line), str(exc).splitlines()[0])
        raise EdgesegError(f"{path}: refused: the pickle holds a type outside nnU-Net checkpoints' allow-list "
                           f"({first.strip()[:160]})") from None
    except Exception as exc:
        raise EdgesegError(f"{path}: unreadable nnU-Net checkpoint ({type(exc).__name__}: {str(exc)[:160]})") from None
    weights = checkpoint.get("network_weights") if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise EdgesegError(f"{path}: not an nnU-Net checkpoint (no network_weights of tensors)")
    return checkpoint


def configuration(plans: dict, name: str, where: str) -> dict:
    """A configuration of the plan with what it inherits (``inherits_from``) merged in."""
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise EdgesegError(f"{where}: plans.json has no configuration {name!r} ({', '.join(configs)})")
    config = dict(configs[name])
    if "inherits_from" in config:
        parent = configuration(plans, config.pop("inherits_from"), where)
        config = {**parent, **config}
    return config


def _normalization(plans: dict, config: dict, channels: int, where: str) -> dict:
    """The plan's per-channel normalization as one edgeseg normalization (the same for every channel)."""
    schemes, masks = config["normalization_schemes"], config.get("use_mask_for_norm") or [False] * channels
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    mapped = []
    for c, scheme in enumerate(schemes):
        if scheme == "ZScoreNormalization":
            mapped.append({"normalization": "zscore", "clip_percentiles": None, "mask_nonzero": bool(masks[c])})
        elif scheme == "CTNormalization":
            p = props.get(str(c)) or {}
            mapped.append({"normalization": "fixed", "window": (p["percentile_00_5"], p["percentile_99_5"]),
                           "stats": (p["mean"], max(p["std"], 1e-8)), "clip_percentiles": None})
        elif scheme == "RescaleTo01Normalization":
            mapped.append({"normalization": "minmax", "clip_percentiles": None})
        elif scheme == "RGBTo01Normalization":
            mapped.append({"normalization": "fixed", "stats": (0.0, 255.0), "clip_percentiles": None})
        elif scheme == "NoNormalization":
            mapped.append({"normalization": "none", "clip_percentiles": None})
        else:
            raise EdgesegError(f"{where}: normalization scheme {scheme!r} is not mapped (ZScore, CT, RescaleTo01, "
                               "RGBTo01, NoNormalization are)")
    if len(mapped) != channels or any(m != mapped[0] for m in mapped):
        raise EdgesegError(f"{where}: channels normalized differently ({', '.join(schemes)}): edgeseg applies one "
                           "normalization to every channel")
    return mapped[0]


def _check_plan(plans: dict, config: dict, where: str) -> None:
    """Refuse, in one line, what edgeseg's native-geometry path does not do the way nnU-Net does."""
    dims, reader = len(config.get("patch_size", [])), plans.get("image_reader_writer")
    if (dims, reader) not in ((2, "NaturalImage2DIO"), *((3, r) for r in VOLUME_READERS)):
        raise EdgesegError(f"{where}: imported are 2D configurations of 2D image datasets (NaturalImage2DIO) and 3D "
                           f"configurations of volumes ({', '.join(VOLUME_READERS)}); this one has patch "
                           f"{config.get('patch_size')} read by {reader} (2D models of volume slices, reorienting "
                           "readers: not yet)")
    if config.get("previous_stage"):
        raise EdgesegError(f"{where}: a cascade stage (it takes the {config['previous_stage']} predictions as input) "
                           "is not imported; import the stages' standalone configurations")
    transpose = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    if sorted(transpose) != [0, 1, 2] or (dims == 2 and transpose != [0, 1, 2]):
        raise EdgesegError(f"{where}: transpose_forward {transpose} is not supported"
                           f"{' for 2D images' if dims == 2 else ''}")
    for key, (name, kwargs) in (("resampling_fn_data", DATA_RESAMPLING),
                                ("resampling_fn_probabilities", PROBABILITY_RESAMPLING)):
        if config.get(key) != name or config.get(f"{key}_kwargs") != kwargs:
            raise EdgesegError(f"{where}: {key} {config.get(key)} {config.get(f'{key}_kwargs')} differs from "
                               f"nnU-Net's default ({name} {kwargs}), which is the one edgeseg reproduces")


def _model_axes(plans: dict, dims: int) -> list[int] | None:
    """The edgeseg axis each spatial axis of the network sees: nnU-Net reads a volume edgeseg holds as (x, y, z)
    as (z, y, x), then applies ``transpose_forward``; None when that is no change (2D images are read alike)."""
    if dims == 2:
        return None
    axes = [2 - int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    return None if axes == [0, 1, 2] else axes


def _on_axes(values, axes: list[int] | None) -> list:
    """Per-axis values of the network's axes (patch, spacing) on edgeseg's axes."""
    if axes is None:
        return list(values)
    out = [None] * len(values)
    for j, axis in enumerate(axes):
        out[axis] = values[j]
    return out


def _preprocessing(plans: dict, config: dict, channels: list[str], axes: list[int] | None,
                   mirror_axes: list[int] | None, where: str):
    """The plan's preprocessing as an edgeseg spec on edgeseg's axes (patch, spacing and mirror axes moved)."""
    from edgeseg.data.preprocessing import PreprocessSpec

    dims = len(config["patch_size"])
    spacing = _on_axes([float(s) for s in config["spacing"]], axes)
    mirror = [axes[m] if axes else m for m in mirror_axes] if mirror_axes else None
    return PreprocessSpec(tuple(_on_axes(config["patch_size"], axes)), channels, resize="sliding", crop_nonzero=True,
                          spacing=None if dims == 2 and spacing == [1.0, 1.0] else spacing, overlap=0.5,
                          mirror_axes=tuple(mirror) if mirror else None,
                          **_normalization(plans, config, len(channels), where))


def _configuration_name(folder: Path, plans: dict, checkpoint: dict) -> str:
    """The configuration the fold was trained with: the folder's ``Trainer__Plans__<configuration>`` name, else the
    one nnU-Net's trainer recorded in the checkpoint (a renamed folder)."""
    named = folder.name.rsplit("__", 1)[-1]
    recorded = (checkpoint.get("init_args") or {}).get("configuration")
    return named if named in (plans.get("configurations") or {}) or not isinstance(recorded, str) else recorded


def _labels(dataset: dict, where: str) -> list[str]:
    labels = dataset.get("labels") or {}
    if any(not isinstance(v, int) for v in labels.values()):
        raise EdgesegError(f"{where}: region-based labels (sigmoid outputs) are not supported")
    by_value = {v: k for k, v in labels.items() if v >= 0 and k != "ignore"}
    if sorted(by_value) != list(range(len(by_value))):
        raise EdgesegError(f"{where}: label values {sorted(by_value)} are not 0..N-1")
    return [by_value[v] for v in range(len(by_value))]


@register_importer
class NnUNetImporter(Importer):
    name = "nnunet"
    description = "nnU-Net v2 trained model folder: plans.json, dataset.json, fold_N/checkpoint_final.pth"
    requires = ("dynamic_network_architectures",)
    extra = "nnunet"

    def detect(self, source: Path, request: ImportRequest) -> bool:
        return source.is_dir() and _model_folder(source) is not None

    def load(self, source: Path, request: ImportRequest) -> Imported:
        from edgeseg.checkpoint import CheckpointSpec
        from edgeseg.models import create_model

        folder = _model_folder(source)
        if folder is None:
            raise EdgesegError(f"{source}: not an nnU-Net trained model folder (plans.json, dataset.json, "
                               "fold_N/checkpoint_final.pth)")
        fold, weights = self._fold(folder, source, request)
        plans, dataset = _read_json(folder / "plans.json"), _read_json(folder / "dataset.json")
        checkpoint = read_checkpoint(weights)
        config_name = _configuration_name(folder, plans, checkpoint)
        where = f"{folder.name} ({config_name})"
        config = configuration(plans, config_name, where)
        _check_plan(plans, config, where)
        channels = [str(v) for _, v in sorted((dataset.get("channel_names") or {}).items(), key=lambda kv: int(kv[0]))]
        labels = _labels(dataset, where)
        arch = config["architecture"]
        network = str(arch["network_class_name"]).rsplit(".", 1)[-1]
        axes = _model_axes(plans, len(config["patch_size"]))
        arch_kwargs = {**arch["arch_kwargs"], **({"spatial_axes": axes} if axes else {})}
        model = create_model(f"nnunet:{network}", len(channels), len(labels), **arch_kwargs)
        load_into(model, {k.removeprefix("module."): v for k, v in checkpoint["network_weights"].items()}, weights)
        mirroring = list(checkpoint.get("inference_allowed_mirroring_axes") or [])
        if request.mirroring and not mirroring:
            raise EdgesegError(f"{where}: mirroring asked for, but the trainer allowed no mirroring axes")
        preprocessing = _preprocessing(plans, config, channels, axes, mirroring if request.mirroring else None, where)
        spec = CheckpointSpec(arch=f"nnunet:{network}", arch_kwargs=arch_kwargs, in_channels=len(channels),
                              num_classes=len(labels), label_names=labels, spatial_dims=len(preprocessing.size),
                              preprocessing=preprocessing)
        spacing = config["spacing"]
        read = [folder / "plans.json", folder / "dataset.json", weights] + \
            [p for p in [folder / "dataset_fingerprint.json"] if p.is_file()]
        record = {"framework": "nnunet", "kind": "trained model folder", "network": network, "fold": fold,
                  "configuration": config_name, "trainer": str(checkpoint.get("trainer_name", "")),
                  "epochs": checkpoint.get("current_epoch"), "files": source_files(folder, read),
                  "mirroring": {"allowed_axes": mirroring, "used": request.mirroring}}
        tta = (f"mirroring TTA on, axes {mirroring} (each window {2 ** len(mirroring)}× through the model)"
               if request.mirroring else "mirroring TTA off (as nnUNetv2_predict --disable_tta; --mirroring turns it on)")
        notes = [f"fold {fold} of {folder.name}; deep supervision off; {tta}",
                 f"preprocessing: {config['normalization_schemes'][0]}, crop to non-zero, spacing {spacing}, "
                 f"patch {config['patch_size']}, Gaussian sliding window at step 0.5"]
        if len(preprocessing.size) == 3:
            notes.append(f"volumes: nnU-Net reads them (z, y, x), transpose_forward {plans.get('transpose_forward')}: "
                         f"the network sees edgeseg's axes {axes or [0, 1, 2]} (permuted in the graph); the image's "
                         "own spacing is resampled to the plan's, separately along a coarse axis as nnU-Net does")
        reference = _reference(getattr(model, "net", model), plans, config_name, dataset, checkpoint, request.mirroring)
        return Imported(model.eval(), spec, record, reference, notes, native=True)

    @staticmethod
    def _fold(folder: Path, source: Path, request: ImportRequest) -> tuple[str, Path]:
        folds = _folds(folder)
        wanted = request.fold or (source.name.removeprefix("fold_") if source.name.startswith("fold_") else None)
        if wanted is None and len(folds) > 1:
            raise EdgesegError(f"{folder.name}: {len(folds)} folds ({', '.join(folds)}); choose one with --fold or by "
                               "passing its fold_N folder (an ensemble of folds is not imported: import each fold)")
        wanted = wanted if wanted is not None else next(iter(folds))
        if str(wanted) not in folds:
            raise EdgesegError(f"{folder.name}: no fold_{wanted}/checkpoint_final.pth (folds: {', '.join(folds)})")
        return str(wanted), folds[str(wanted)]


def _reference(model, plans: dict, config_name: str, dataset: dict, checkpoint: dict, mirroring: bool):
    """nnU-Net's own predictor, when nnunetv2 is installed (else the import is not checked against it)."""
    import importlib.util

    if importlib.util.find_spec("nnunetv2") is None:
        return None
    from edgeseg.importers.nnunet_reference import NnUNetReference

    return NnUNetReference(model, plans, config_name, dataset, checkpoint, mirroring)
