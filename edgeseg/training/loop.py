"""The training loop: AdamW + one-cycle over the planned steps (:mod:`edgeseg.training.plan`), augmentation,
the Dice + focal loss, validation Dice after each epoch, early stopping and the time limit.
:func:`edgeseg.training.trainer.train` and ``finetune`` run it."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.metrics import dice_from_counts, overlap_counts
from edgeseg.progress import progress_bar
from edgeseg.training.config import TrainConfig
from edgeseg.training.plan import Pace, PhasePlan, eta_seconds, plan_phases, replan_switch

log = logging.getLogger(__name__)


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


@dataclass
class _Loop:
    """The state of one training run between epochs: the model and its optimiser, the plan and the pace."""

    model: torch.nn.Module
    cfg: TrainConfig
    train: tuple[np.ndarray, np.ndarray]
    device: str
    autocast: bool
    memory_format: torch.memory_format
    start: float
    plan: PhasePlan
    pace: Pace
    limit: float | None
    steps_per_epoch: int
    step: int = 0

    def __post_init__(self):
        cfg, total = self.cfg, max(self.plan.total_steps, 4)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # warm-up of 10 % but at least 1.5 steps: OneCycleLR divides by zero on runs shorter than ~15 steps otherwise
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=total,
                                                         pct_start=max(0.1, 1.5 / total))
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def left(self) -> float | None:
        return self.limit - (time.perf_counter() - self.start) if self.limit else None

    def epoch(self, epoch: int, bar, task, best_dice: float) -> tuple[list[float], dict[int, int]]:
        """The optimiser steps of one epoch (fewer when the plan ends in it): losses and steps per resolution."""
        cfg, (x_train, y_train) = self.cfg, self.train
        self.model.train()
        order = torch.randperm(len(x_train), generator=self.gen)
        losses, by_size = [], {}
        for s in range(self.steps_per_epoch):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size].numpy()
            size, t0 = self.plan.size_at(self.step), time.perf_counter()
            losses.append(_train_step(self.model, self.opt, self.sched, cfg, (x_train[idx], y_train[idx]), size,
                                      self.gen, self.device, self.autocast, self.memory_format))
            self.pace.add_step(size, time.perf_counter() - t0)
            by_size[size] = by_size.get(size, 0) + 1
            self.step += 1
            bar.update(task, advance=1, eta=eta_seconds(self.plan, self.step, self.pace, self.left()),
                       info=f"epoch {epoch} at {size} px loss {np.mean(losses):.3f} "
                            f"best val Dice {max(best_dice, 0):.4f}")
            if self.step >= self.plan.total_steps:
                break
        return losses, by_size

    def stop_reason(self, epoch: int, best_epoch: int) -> str | None:
        """Why training stops after ``epoch`` (planned steps done, no gain, the time limit), else None; on a time
        limit, a run slower than planned moves the switch to full resolution earlier."""
        cfg, plan, total = self.cfg, self.plan, self.plan.total_steps
        if self.step >= total:
            return f"all {total} planned steps done" + (" (planned to fit the time limit)"
                                                        if plan.basis == "time limit" else "")
        if epoch - best_epoch >= cfg.patience and plan.size_at(self.step) == plan.size:
            return f"early stop: no val Dice gain in {cfg.patience} epochs"
        if not self.limit:
            return None
        left = self.left()
        switch = replan_switch(plan, self.step, self.pace, left)
        if switch is not None and switch < plan.low_res_steps:
            plan.notes.append(f"re-planned after epoch {epoch}: full resolution from step {switch} instead "
                              f"of {plan.low_res_steps} (steps ran slower than timed at the start)")
            plan.low_res_steps = switch
        upcoming = plan.seconds(self.pace, self.step, min(total, self.step + self.steps_per_epoch))
        if upcoming > left:
            return (f"time limit {cfg.time_limit_minutes:g} min: the next epoch (about {upcoming:.0f} s) would "
                    f"overrun it; stopped after step {self.step} of {total}")
        return None


def _start_loop(model, cfg: TrainConfig, train_data, x_val: np.ndarray, device: str, autocast: bool,
                start: float) -> _Loop:
    """The model on ``device`` (channels-last for 2D), its pace probed when there is a time limit, the plan."""
    x_train, y_train = train_data
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
    return _Loop(model, cfg, (x_train, y_train), device, autocast, memory_format, start, plan, pace, limit,
                 steps_per_epoch)


def fit_model(model, cfg: TrainConfig, train_data, val_data, num_classes: int, device: str, autocast: bool,
              start: float, title: str, baseline: float | None = None) -> dict:
    """The training loop: AdamW + one-cycle over the planned steps (``cfg.epochs``, capped by ``max_steps``, or
    what fits the time limit: :mod:`edgeseg.training.plan`), early stopping on validation Dice; the best weights
    are loaded back into ``model`` (left on ``device``).

    ``train_data`` is ``(images, labels)``, ``val_data`` ``(images, labels, owner)``. With ``baseline`` (the
    validation Dice of the weights as given), an epoch must beat it to replace them. The result holds the
    plan, the measured pace, each epoch's steps per resolution and why training stopped.
    """
    x_val, y_val, owner_val = val_data
    loop = _start_loop(model, cfg, train_data, x_val, device, autocast, start)
    model, plan = loop.model, loop.plan
    best = ({"dice": -1.0, "epoch": 0, "state": None} if baseline is None else
            {"dice": baseline, "epoch": 0, "state": copy.deepcopy(model.state_dict())})
    history, stop_reason = [], "epochs done"
    log.info("%s %d train / %d val samples on %s, bf16 autocast=%s; %s", title, len(train_data[0]), len(x_val),
             device, "on" if autocast else "off", plan.describe())
    with progress_bar() as bar:
        task = bar.add_task("train", total=plan.total_steps, info="", eta=None)
        for epoch in range(1, cfg.epochs + 1):
            losses, by_size = loop.epoch(epoch, bar, task, best["dice"])
            t0 = time.perf_counter()
            val = validation_dice(model, x_val, y_val, owner_val, num_classes, cfg.batch_size, autocast, device)
            loop.pace.add_validation(time.perf_counter() - t0)
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "val_dice": round(val, 5),
                            "steps_by_size": {str(k): v for k, v in by_size.items()}})
            log.info("epoch %3d  %s  loss %.4f  val Dice %.4f", epoch, "+".join(f"{k} px" for k in by_size),
                     np.mean(losses), val)
            if val > best["dice"]:
                best = {"dice": val, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
            reason = loop.stop_reason(epoch, best["epoch"])
            if reason:
                stop_reason = reason
                break
    if plan.low_size and loop.step <= plan.low_res_steps:
        plan.notes.append(f"training ended at step {loop.step}, inside the low-resolution phase: every epoch ran at "
                          f"{plan.low_size} px and the model never trained at {plan.size} px; give it more time "
                          "or a smaller --progressive-fraction")
    model.load_state_dict(best["state"])
    return {"best_epoch": best["epoch"], "best_dice": best["dice"], "stop_reason": stop_reason, "history": history,
            "steps": loop.step, "plan": {**plan.to_dict(), **loop.pace.to_dict()}}
