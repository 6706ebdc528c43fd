"""What a training run depends on: :class:`TrainConfig`."""
from __future__ import annotations

from dataclasses import dataclass, field


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
