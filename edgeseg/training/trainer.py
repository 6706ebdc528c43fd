"""Training runs: the data prepared as samples, :func:`train` (a new checkpoint) and :func:`finetune` (recovery
after pruning), over the loop of :mod:`edgeseg.training.loop`."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from edgeseg.checkpoint import CheckpointSpec, save_checkpoint
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.errors import InputError, UsageError
from edgeseg.evaluation import check_compatible, evaluate_cases
from edgeseg.inference import torch_predictor
from edgeseg.progress import track
from edgeseg.training.config import TrainConfig
from edgeseg.training.loop import fit_model, validation_dice

log = logging.getLogger(__name__)


def bf16_supported(device: str = "cpu") -> bool:
    """Autocast to bfloat16 pays off only with native BF16: AVX512-BF16 / AMX on CPUs, Ampere+ on GPUs."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_samples(dataset: NnUNetDataset, case_ids: list[str], spec: PreprocessSpec, model_dims: int,
                  description: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preprocessed ``images (N, C, *size)``, ``labels (N, *size)`` and the case index of each sample.

    A 2D model on volumes gets the slices that hold any signal (along the last axis).
    """
    images, labels, owner = [], [], []
    for i, cid in enumerate(track(case_ids, description)):
        case = dataset.load(cid)
        if case.spatial_dims == model_dims:
            image, label = spec.pair(case.image, case.label, case.geometry.spacing)
            images.append(image)
            labels.append(label.astype(np.uint8))
            owner.append(i)
        elif model_dims == 2 and case.spatial_dims == 3:
            volume = spec.normalize(case.image)
            flat = case.image.reshape(case.image.shape[0], -1, case.image.shape[-1])
            for z in np.flatnonzero((flat.max(1) > flat.min(1)).any(0)):  # slices that are not blank
                images.append(spec.fit(volume[..., z]).astype(np.float32))
                labels.append(spec.fit_label(case.label[..., z]).astype(np.uint8))
                owner.append(i)
        else:
            raise InputError(f"{cid}: a {model_dims}D model cannot train on {case.spatial_dims}D images")
    return np.stack(images), np.stack(labels), np.asarray(owner)


def resolve_device(cfg: TrainConfig) -> tuple[str, bool]:
    """The device to train on and whether BF16 autocast is used there."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: this PyTorch build sees no CUDA GPU")
    return device, cfg.amp == "bf16" or (cfg.amp == "auto" and bf16_supported(device))


def _volume_axcodes(dataset: NnUNetDataset, case_ids: list[str]) -> dict:
    """``{"axcodes": [...]}``: the orientation of the training volumes (the most common one), read from their
    NIfTI headers, which `edgeseg infer` turns every volume to; empty for 2D images."""
    from collections import Counter

    import nibabel as nib

    from edgeseg.data.io import NIFTI_EXTS, file_extension

    files = [dataset.cases[c].image_files[0] for c in case_ids]
    codes = Counter(nib.aff2axcodes(nib.load(str(f)).affine) for f in files if file_extension(f) in NIFTI_EXTS)
    return {"axcodes": list(codes.most_common(1)[0][0])} if codes else {}


def train(cfg: TrainConfig, out: str | Path, command: str = "") -> tuple[Path, dict]:
    """Train per ``cfg`` and save the best (by validation Dice) checkpoint to ``out``; returns its metrics."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    dataset = NnUNetDataset(cfg.data)
    from edgeseg.models import create_model

    if cfg.arch == "hybrid":  # the positional embedding's reference grid follows the training size
        cfg.arch_kwargs = {"img_size": cfg.size, **cfg.arch_kwargs}
    model = create_model(cfg.arch, len(dataset.channel_names), dataset.num_classes, **cfg.arch_kwargs)
    model_dims = getattr(model, "dims", 2)
    spec_pre = PreprocessSpec(size=(cfg.size,) * model_dims, channel_names=dataset.channel_names,
                              resize=cfg.resize, normalization=cfg.normalization)
    train_ids, val_ids = dataset.split("train", cfg.seed), dataset.split("val", cfg.seed)
    if cfg.max_cases:
        train_ids, val_ids = train_ids[: cfg.max_cases], val_ids[: max(1, cfg.max_cases // 4)]
    depth = getattr(model, "depth", 0)
    if cfg.progressive_size and (cfg.progressive_size % 2**depth or cfg.progressive_size > cfg.size):
        raise UsageError(f"--progressive-size {cfg.progressive_size} must be <= --size and divide by 2**depth")
    if not train_ids or not val_ids:
        raise InputError(f"{dataset.root}: need both training and validation cases (have {len(train_ids)}/{len(val_ids)})")
    if not 0 <= cfg.progressive_fraction <= 1:
        raise UsageError(f"--progressive-fraction {cfg.progressive_fraction} must be between 0 and 1")
    if cfg.time_limit_minutes is not None and cfg.time_limit_minutes <= 0:
        raise UsageError(f"--time-limit {cfg.time_limit_minutes} must be a positive number of minutes")
    x_train, y_train, _ = build_samples(dataset, train_ids, spec_pre, model_dims, "load train")
    x_val, y_val, owner_val = build_samples(dataset, val_ids, spec_pre, model_dims, "load val")
    device, autocast = resolve_device(cfg)
    fit = fit_model(model, cfg, (x_train, y_train), (x_val, y_val, owner_val), dataset.num_classes, device, autocast,
                    start, f"training {cfg.arch} on {dataset.name} ({len(train_ids)}/{len(val_ids)} cases):")
    model = model.to("cpu")  # the final scoring and the checkpoint are device-independent
    train_seconds = time.perf_counter() - start
    spec = CheckpointSpec(
        arch=cfg.arch, arch_kwargs=cfg.arch_kwargs, in_channels=len(dataset.channel_names),
        num_classes=dataset.num_classes, label_names=dataset.label_names, preprocessing=spec_pre,
        spatial_dims=model_dims,
        data={"dataset": dataset.name, "train_cases": train_ids, "val_cases": val_ids,
              "fingerprint": dataset.fingerprint(train_ids + val_ids), "license": dataset.meta.get("license", ""),
              **_volume_axcodes(dataset, train_ids)},
        training={**asdict(cfg), "command": command, "best_epoch": fit["best_epoch"], "stop_reason": fit["stop_reason"],
                  "plan": fit["plan"], "history": fit["history"], "train_seconds": round(train_seconds, 1),
                  "bf16_autocast": autocast,
                  "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                  "torch_version": torch.__version__, "threads": torch.get_num_threads()},
    )
    spec.metrics = {"val": {k: v for k, v in evaluate_cases(torch_predictor(model), spec, dataset, val_ids,
                                                            "final val").items() if k != "schema_version"}}
    save_checkpoint(out, model, spec)
    return Path(out), spec.metrics["val"]


def finetune(model, spec: CheckpointSpec, data_dir: str | Path, *, epochs: int = 10, max_steps: int | None = None,
             time_limit_minutes: float | None = None, lr: float | None = None, max_cases: int | None = None,
             **overrides) -> dict:
    """Fine-tune ``model`` in place (e.g. after pruning) on the training split of ``data_dir`` with the loop and
    augmentation recipe of its training run (``spec.training``); ``lr`` defaults to half the recipe's.

    Keeps the weights with the best validation Dice, the given ones included. Returns the validation Dice
    (at model resolution) before and after, the history and the time taken; the model ends on the CPU.
    """
    start = time.perf_counter()
    known = TrainConfig.__dataclass_fields__
    recipe = {k: v for k, v in spec.training.items() if k in known}
    cfg = TrainConfig(**{**recipe, "data": str(data_dir), "arch": spec.arch, "size": spec.preprocessing.size[0],
                         "epochs": epochs, "max_steps": max_steps, "time_limit_minutes": time_limit_minutes,
                         "lr": lr or recipe.get("lr", TrainConfig.lr) / 2, "max_cases": max_cases,
                         "progressive_size": None, "amp": "auto", "device": "auto", **overrides})
    torch.manual_seed(cfg.seed)
    dataset = NnUNetDataset(data_dir)
    check_compatible(spec, dataset)
    train_ids, val_ids = dataset.split("train", cfg.seed), dataset.split("val", cfg.seed)
    if cfg.max_cases:
        train_ids, val_ids = train_ids[: cfg.max_cases], val_ids[: max(1, cfg.max_cases // 4)]
    x_train, y_train, _ = build_samples(dataset, train_ids, spec.preprocessing, spec.spatial_dims, "load train")
    val_data = build_samples(dataset, val_ids, spec.preprocessing, spec.spatial_dims, "load val")
    device, autocast = resolve_device(cfg)
    before = validation_dice(model.to(device), *val_data, spec.num_classes, cfg.batch_size, autocast, device)
    fit = fit_model(model, cfg, (x_train, y_train), val_data, spec.num_classes, device, autocast, start,
                    f"fine-tuning {spec.arch} on {dataset.name} (val Dice {before:.4f} before):", baseline=before)
    model.to("cpu").eval()
    return {"dice_before": round(before, 5), "dice_after": round(fit["best_dice"], 5), "lr": cfg.lr,
            "epochs": epochs, "max_steps": max_steps, **fit, "seconds": round(time.perf_counter() - start, 1)}
