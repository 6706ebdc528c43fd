"""Training: Dice + focal loss, AdamW + one-cycle, augmentation, early stopping on validation Dice."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import CheckpointSpec, save_checkpoint
from .data.nnunet import NnUNetDataset
from .data.preprocessing import PreprocessSpec
from .errors import EdgesegError
from .evaluate import check_compatible, evaluate_cases
from .inference import torch_predictor
from .metrics import dice_from_counts, overlap_counts
from .progress import console, progress_bar, track


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint for reproducibility)."""

    data: str
    arch: str = "hybrid"
    size: int = 256
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    patience: int = 8
    normalization: str = "zscore"
    resize: str = "resize"
    arch_kwargs: dict = field(default_factory=dict)
    flip_axes: tuple[int, ...] = (-1,)
    rotate_degrees: float = 15.0
    amp: str = "auto"  # auto | bf16 | off
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    time_limit_minutes: float | None = None
    max_cases: int | None = None  # cap on training cases (quick runs and tests)
    max_steps: int | None = None  # cap on optimiser steps (tests)
    # Progressive resizing: the first ``progressive_fraction`` of the steps run at ``progressive_size``
    # (batches downsampled on the fly), the rest at ``size``: many more epochs fit a CPU time budget.
    progressive_size: int | None = None
    progressive_fraction: float = 0.5


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
            images.append(spec(case.image))
            labels.append(spec.fit_label(case.label).astype(np.uint8))
            owner.append(i)
        elif model_dims == 2 and case.spatial_dims == 3:
            volume = spec.normalize(case.image)
            flat = case.image.reshape(case.image.shape[0], -1, case.image.shape[-1])
            for z in np.flatnonzero((flat.max(1) > flat.min(1)).any(0)):  # slices that are not blank
                images.append(spec.fit(volume[..., z]).astype(np.float32))
                labels.append(spec.fit_label(case.label[..., z]).astype(np.uint8))
                owner.append(i)
        else:
            raise EdgesegError(f"{cid}: a {model_dims}D model cannot train on {case.spatial_dims}D images")
    return np.stack(images), np.stack(labels), np.asarray(owner)


def augment(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    """Random flips, small rotation/scale (2D), contrast/brightness jitter and Gaussian noise."""
    b = x.shape[0]
    for axis in cfg.flip_axes:
        flip = torch.rand(b, generator=gen) < 0.5
        x[flip], y[flip] = x[flip].flip(axis), y[flip].flip(axis)
    if x.ndim == 4 and cfg.rotate_degrees > 0:
        on = (torch.rand(b, generator=gen) < 0.5).float()
        angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(cfg.rotate_degrees) * on
        scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.1 * on
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    shape = (b, x.shape[1]) + (1,) * (x.ndim - 2)
    contrast = 1 + (torch.rand(shape, generator=gen) * 2 - 1) * 0.2
    shift = (torch.rand(shape, generator=gen) * 2 - 1) * 0.1
    noise = torch.randn(x.shape, generator=gen) * torch.rand(shape, generator=gen) * 0.05
    return x * contrast + shift + noise, y


def downsample_batch(x: torch.Tensor, y: torch.Tensor, size: int):
    """Shrink a batch to ``size`` per side: bilinear (antialiased) images, nearest labels."""
    shape = (size,) * (x.ndim - 2)
    x = F.interpolate(x, size=shape, mode="bilinear" if x.ndim == 4 else "trilinear", antialias=x.ndim == 4,
                      align_corners=False)
    return x, F.interpolate(y[:, None].float(), size=shape, mode="nearest")[:, 0].long()


def in_low_res_phase(cfg: TrainConfig, step: int, total_steps: int) -> bool:
    """Whether optimiser step ``step`` still belongs to the progressive-resizing (low-resolution) phase."""
    return bool(cfg.progressive_size) and step < cfg.progressive_fraction * total_steps


def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Soft Dice over foreground classes (batch-wise) + focal cross-entropy."""
    logits = logits.float()
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)[1:]
    denom = (probs + onehot).sum(dims)[1:]
    dice = 1 - ((2 * inter + 1) / (denom + 1)).mean()
    logp = F.log_softmax(logits, 1).gather(1, target[:, None])
    focal = (-(1 - logp.exp()) ** gamma * logp).mean()
    return dice + focal


def validation_dice(model, images: np.ndarray, labels: np.ndarray, owner: np.ndarray, num_classes: int,
                    batch_size: int, autocast: bool, device: str = "cpu") -> float:
    """Mean foreground Dice per case at model resolution (slices of a volume pooled into one case)."""
    counts = np.zeros((owner.max() + 1, num_classes, 3), np.int64)
    model.eval()
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
        for s in range(0, len(images), batch_size):
            pred = model(torch.from_numpy(images[s : s + batch_size]).to(device)).argmax(1).cpu().numpy()
            for p, t, o in zip(pred, labels[s : s + batch_size], owner[s : s + batch_size]):
                counts[o] += overlap_counts(p, t.astype(np.int64), num_classes)
    return float(dice_from_counts(counts)[:, 1:].mean())


def resolve_device(cfg: TrainConfig) -> tuple[str, bool]:
    """The device to train on and whether BF16 autocast is used there."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EdgesegError("--device cuda: this PyTorch build sees no CUDA GPU")
    return device, cfg.amp == "bf16" or (cfg.amp == "auto" and bf16_supported(device))


def fit_model(model, cfg: TrainConfig, train_data, val_data, num_classes: int, device: str, autocast: bool,
              start: float, title: str, baseline: float | None = None) -> dict:
    """The training loop: AdamW + one-cycle over ``cfg.epochs`` (capped by ``max_steps``/time limit), early
    stopping on validation Dice; the best weights are loaded back into ``model`` (left on ``device``).

    ``train_data`` is ``(images, labels)``, ``val_data`` ``(images, labels, owner)``. With ``baseline`` (the
    validation Dice of the weights as given), an epoch must beat it to replace them.
    """
    x_train, y_train = train_data
    x_val, y_val, owner_val = val_data
    device_type = device.split(":")[0]
    # channels-last lets oneDNN pick its fast convolution kernels (~20 % faster training here)
    memory_format = torch.channels_last if x_train.ndim == 4 else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)

    steps_per_epoch = max(1, len(x_train) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # warm-up of 10 % but at least 1.5 steps: OneCycleLR divides by zero on runs shorter than ~15 steps otherwise
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 4),
                                                pct_start=max(0.1, 1.5 / max(total_steps, 4)))
    gen = torch.Generator().manual_seed(cfg.seed)
    best = ({"dice": -1.0, "epoch": 0, "state": None} if baseline is None else
            {"dice": baseline, "epoch": 0, "state": copy.deepcopy(model.state_dict())})
    history, step, stop_reason = [], 0, "epochs done"
    console.print(f"{title} {len(x_train)} train / {len(x_val)} val samples, {total_steps} steps on {device}, "
                  f"bf16 autocast={'on' if autocast else 'off'}")
    with progress_bar() as bar:
        task = bar.add_task("train", total=total_steps, info="")
        for epoch in range(1, cfg.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            order = torch.randperm(len(x_train), generator=gen)
            losses = []
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size].numpy()
                x, y = augment(torch.from_numpy(x_train[idx]), torch.from_numpy(y_train[idx]).long(), cfg, gen)
                if in_low_res_phase(cfg, step, total_steps):
                    x, y = downsample_batch(x, y, cfg.progressive_size)
                x, y = x.to(device).contiguous(memory_format=memory_format), y.to(device)
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
                    loss = dice_focal_loss(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                step += 1
                bar.update(task, advance=1, info=f"epoch {epoch} loss {np.mean(losses):.3f} best val Dice {max(best['dice'], 0):.4f}")
                if step >= total_steps:
                    break
            val = validation_dice(model, x_val, y_val, owner_val, num_classes, cfg.batch_size, autocast, device)
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "val_dice": round(val, 5)})
            bar.console.print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  val Dice {val:.4f}")
            if val > best["dice"]:
                best = {"dice": val, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
            now = time.perf_counter()
            if step >= total_steps:
                break
            if epoch - best["epoch"] >= cfg.patience and not in_low_res_phase(cfg, step, total_steps):
                stop_reason = f"early stop: no val Dice gain in {cfg.patience} epochs"
                break
            if cfg.time_limit_minutes and (2 * now - start - epoch_start) / 60 > cfg.time_limit_minutes:
                # another epoch as long as the last one would overrun the limit
                stop_reason = f"time limit {cfg.time_limit_minutes} min"
                break
    model.load_state_dict(best["state"])
    return {"best_epoch": best["epoch"], "best_dice": best["dice"], "stop_reason": stop_reason, "history": history,
            "steps": step}


def _volume_axcodes(dataset: NnUNetDataset, case_ids: list[str]) -> dict:
    """``{"axcodes": [...]}``: the orientation of the training volumes (the most common one), read from their
    NIfTI headers, which `edgeseg infer` turns every volume to; empty for 2D images."""
    from collections import Counter

    import nibabel as nib

    from .data.io import NIFTI_EXTS, file_extension

    files = [dataset.cases[c].image_files[0] for c in case_ids]
    codes = Counter(nib.aff2axcodes(nib.load(str(f)).affine) for f in files if file_extension(f) in NIFTI_EXTS)
    return {"axcodes": list(codes.most_common(1)[0][0])} if codes else {}


def train(cfg: TrainConfig, out: str | Path, command: str = "") -> tuple[Path, dict]:
    """Train per ``cfg`` and save the best (by validation Dice) checkpoint to ``out``; returns its metrics."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    dataset = NnUNetDataset(cfg.data)
    from .models import create_model

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
        raise EdgesegError(f"--progressive-size {cfg.progressive_size} must be <= --size and divide by 2**depth")
    if not train_ids or not val_ids:
        raise EdgesegError(f"{dataset.root}: need both training and validation cases (have {len(train_ids)}/{len(val_ids)})")
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
                  "history": fit["history"], "train_seconds": round(train_seconds, 1), "bf16_autocast": autocast,
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
