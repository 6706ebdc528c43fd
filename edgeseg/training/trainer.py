"""Training: Dice + focal loss, AdamW + one-cycle, augmentation, early stopping on validation Dice."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.checkpoint import CheckpointSpec, save_checkpoint
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.errors import InputError, UsageError
from edgeseg.evaluation import check_compatible, evaluate_cases
from edgeseg.inference import torch_predictor
from edgeseg.metrics import dice_from_counts, overlap_counts
from edgeseg.progress import progress_bar, track
from edgeseg.training.plan import Pace, eta_seconds, plan_phases, replan_switch

log = logging.getLogger(__name__)


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
            raise InputError(f"{cid}: a {model_dims}D model cannot train on {case.spatial_dims}D images")
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
        raise UsageError("--device cuda: this PyTorch build sees no CUDA GPU")
    return device, cfg.amp == "bf16" or (cfg.amp == "auto" and bf16_supported(device))


def _train_step(model, opt, sched, cfg: TrainConfig, batch: tuple[np.ndarray, np.ndarray], size: int,
                gen: torch.Generator, device: str, autocast: bool, memory_format) -> float:
    """One optimiser step on a batch (augmented, downsampled to ``size`` when below ``cfg.size``); its loss."""
    x, y = augment(torch.from_numpy(batch[0]), torch.from_numpy(batch[1]).long(), cfg, gen)
    if size != cfg.size:
        x, y = downsample_batch(x, y, size)
    x, y = x.to(device).contiguous(memory_format=memory_format), y.to(device)
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
        loss = dice_focal_loss(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return loss.item()


def _probe_pace(model, cfg: TrainConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                device: str, autocast: bool, memory_format) -> Pace:
    """Seconds per step at each resolution and per validation pass, timed on a copy of the model (the run's
    weights and random streams are untouched): three steps per size, the first (kernel selection) dropped."""
    probe = copy.deepcopy(model)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    batch = (x_train[: cfg.batch_size], y_train[: cfg.batch_size])
    seconds = {}
    for size in filter(None, (cfg.progressive_size, cfg.size)):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _train_step(probe, opt, None, cfg, batch, size, gen, device, autocast, memory_format)
            times.append(time.perf_counter() - t0)
        seconds[size] = float(np.mean(times[1:]))
    probe.eval()
    xb = torch.from_numpy(x_val[: cfg.batch_size]).to(device)
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
        for _ in range(2):
            t0 = time.perf_counter()
            probe(xb).argmax(1).cpu()
            forward = time.perf_counter() - t0
    return Pace(seconds, forward * math.ceil(len(x_val) / cfg.batch_size))


def fit_model(model, cfg: TrainConfig, train_data, val_data, num_classes: int, device: str, autocast: bool,
              start: float, title: str, baseline: float | None = None) -> dict:
    """The training loop: AdamW + one-cycle over the planned steps (``cfg.epochs``, capped by ``max_steps``, or
    what fits the time limit: :mod:`edgeseg.training.plan`), early stopping on validation Dice; the best weights
    are loaded back into ``model`` (left on ``device``).

    ``train_data`` is ``(images, labels)``, ``val_data`` ``(images, labels, owner)``. With ``baseline`` (the
    validation Dice of the weights as given), an epoch must beat it to replace them. The result holds the
    plan, the measured pace, each epoch's steps per resolution and why training stopped.
    """
    x_train, y_train = train_data
    x_val, y_val, owner_val = val_data
    # channels-last lets oneDNN pick its fast convolution kernels (~20 % faster training here)
    memory_format = torch.channels_last if x_train.ndim == 4 else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)

    steps_per_epoch = max(1, len(x_train) // cfg.batch_size)
    limit = cfg.time_limit_minutes * 60 if cfg.time_limit_minutes else None
    pace = _probe_pace(model, cfg, x_train, y_train, x_val, device, autocast, memory_format) if limit else Pace()
    plan = plan_phases(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, size=cfg.size,
                       low_size=cfg.progressive_size, low_fraction=cfg.progressive_fraction, max_steps=cfg.max_steps,
                       budget_seconds=limit - (time.perf_counter() - start) if limit else None,
                       pace=pace if limit else None)
    total_steps = plan.total_steps
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # warm-up of 10 % but at least 1.5 steps: OneCycleLR divides by zero on runs shorter than ~15 steps otherwise
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 4),
                                                pct_start=max(0.1, 1.5 / max(total_steps, 4)))
    gen = torch.Generator().manual_seed(cfg.seed)
    best = ({"dice": -1.0, "epoch": 0, "state": None} if baseline is None else
            {"dice": baseline, "epoch": 0, "state": copy.deepcopy(model.state_dict())})
    history, step, stop_reason = [], 0, "epochs done"
    log.info("%s %d train / %d val samples on %s, bf16 autocast=%s; %s", title, len(x_train), len(x_val), device,
             "on" if autocast else "off", plan.describe())
    with progress_bar() as bar:
        task = bar.add_task("train", total=total_steps, info="", eta=None)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(len(x_train), generator=gen)
            losses, by_size = [], {}
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size].numpy()
                size, t0 = plan.size_at(step), time.perf_counter()
                losses.append(_train_step(model, opt, sched, cfg, (x_train[idx], y_train[idx]), size, gen, device,
                                          autocast, memory_format))
                pace.add_step(size, time.perf_counter() - t0)
                by_size[size] = by_size.get(size, 0) + 1
                step += 1
                left = limit - (time.perf_counter() - start) if limit else None
                bar.update(task, advance=1, eta=eta_seconds(plan, step, pace, left),
                           info=f"epoch {epoch} at {size} px loss {np.mean(losses):.3f} "
                                f"best val Dice {max(best['dice'], 0):.4f}")
                if step >= total_steps:
                    break
            t0 = time.perf_counter()
            val = validation_dice(model, x_val, y_val, owner_val, num_classes, cfg.batch_size, autocast, device)
            pace.add_validation(time.perf_counter() - t0)
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "val_dice": round(val, 5),
                            "steps_by_size": {str(k): v for k, v in by_size.items()}})
            sizes = "+".join(f"{k} px" for k in by_size)
            log.info("epoch %3d  %s  loss %.4f  val Dice %.4f", epoch, sizes, np.mean(losses), val)
            if val > best["dice"]:
                best = {"dice": val, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
            if step >= total_steps:
                stop_reason = f"all {total_steps} planned steps done" + (
                    " (planned to fit the time limit)" if plan.basis == "time limit" else "")
                break
            if epoch - best["epoch"] >= cfg.patience and plan.size_at(step) == plan.size:
                stop_reason = f"early stop: no val Dice gain in {cfg.patience} epochs"
                break
            if limit:
                left = limit - (time.perf_counter() - start)
                switch = replan_switch(plan, step, pace, left)
                if switch is not None and switch < plan.low_res_steps:
                    plan.notes.append(f"re-planned after epoch {epoch}: full resolution from step {switch} instead "
                                      f"of {plan.low_res_steps} (steps ran slower than timed at the start)")
                    plan.low_res_steps = switch
                upcoming = plan.seconds(pace, step, min(total_steps, step + steps_per_epoch))
                if upcoming > left:
                    stop_reason = (f"time limit {cfg.time_limit_minutes:g} min: the next epoch (about "
                                   f"{upcoming:.0f} s) would overrun it; stopped after step {step} of {total_steps}")
                    break
    if plan.low_size and step <= plan.low_res_steps:
        plan.notes.append(f"training ended at step {step}, inside the low-resolution phase: every epoch ran at "
                          f"{plan.low_size} px and the model never trained at {plan.size} px; give it more time "
                          "or a smaller --progressive-fraction")
    model.load_state_dict(best["state"])
    return {"best_epoch": best["epoch"], "best_dice": best["dice"], "stop_reason": stop_reason, "history": history,
            "steps": step, "plan": {**plan.to_dict(), **pace.to_dict()}}


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
