"""How a training run spends its optimiser steps: the progressive-resizing phases, planned from ``--epochs`` or,
when a time limit is given, from the step times measured at each resolution; re-planned from the measured pace
so the full-resolution phase still fits the limit; and an ETA that honours the limit."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

# plan for this share of the time left: measured step times wander (noise, thermal, other processes)
_BUDGET_SHARE = 0.95


class Pace:
    """Seconds per optimiser step at each resolution and per validation pass: first from a short probe, then
    the running mean of the measured steps once a resolution has run a few of them."""

    _MEASURED_FROM = 3  # steps: below this the probe's figure is kept (the first steps include warm-up)

    def __init__(self, step_seconds: dict[int, float] | None = None, validation_seconds: float = 0.0):
        self.probe = dict(step_seconds or {})
        self.validation = validation_seconds
        self._sum: dict[int, float] = {}
        self._count: dict[int, int] = {}

    def add_step(self, size: int, seconds: float) -> None:
        self._sum[size] = self._sum.get(size, 0.0) + seconds
        self._count[size] = self._count.get(size, 0) + 1

    def add_validation(self, seconds: float) -> None:
        self.validation = seconds

    def step(self, size: int) -> float:
        """Seconds per step at ``size``: measured, else probed, else scaled from another size by pixel count."""
        if self._count.get(size, 0) >= self._MEASURED_FROM:
            return self._sum[size] / self._count[size]
        if size in self.probe:
            return self.probe[size]
        known = {s: self._sum[s] / self._count[s] for s in self._count} | self.probe
        if not known:
            return 0.0
        other = max(known)  # the nearest in cost is the largest known size
        return known[other] * (size / other) ** 2

    def to_dict(self) -> dict:
        sizes = sorted(set(self.probe) | set(self._count))
        return {"step_seconds": {str(s): round(self.step(s), 5) for s in sizes},
                "validation_seconds": round(self.validation, 4)}


@dataclass
class PhasePlan:
    """``total_steps`` optimiser steps (the one-cycle schedule's length), the first ``low_res_steps`` of them at
    ``low_size`` px and the rest at ``size`` px; ``basis`` says what set the length."""

    total_steps: int
    low_res_steps: int
    size: int
    low_size: int | None
    steps_per_epoch: int
    basis: str  # "epochs" | "max steps" | "time limit"
    asked_steps: int  # what --epochs (and --max-steps) alone would have run
    notes: list[str] = field(default_factory=list)

    def size_at(self, step: int) -> int:
        return self.low_size if self.low_size and step < self.low_res_steps else self.size

    def seconds(self, pace: Pace, first: int = 0, last: int | None = None) -> float:
        """Predicted seconds for steps ``first`` … ``last - 1`` and the validation passes of their epochs."""
        last = self.total_steps if last is None else last
        if last <= first:
            return 0.0
        low = max(0, min(last, self.low_res_steps if self.low_size else 0) - first)
        steps = low * pace.step(self.low_size or self.size) + (last - first - low) * pace.step(self.size)
        epochs = math.ceil(last / self.steps_per_epoch) - first // self.steps_per_epoch
        return steps + epochs * pace.validation

    def to_dict(self) -> dict:
        return {"basis": self.basis, "total_steps": self.total_steps, "asked_steps": self.asked_steps,
                "steps_per_epoch": self.steps_per_epoch, "size": self.size, "low_size": self.low_size,
                "low_res_steps": self.low_res_steps if self.low_size else 0, "notes": list(self.notes)}

    def describe(self) -> str:
        """One line: how many steps, why, and the phases."""
        why = {"epochs": "from --epochs", "max steps": "capped by --max-steps",
               "time limit": f"to fit the time limit (--epochs asked for {self.asked_steps})"}[self.basis]
        phases = (f"{self.low_res_steps} at {self.low_size} px, then {self.total_steps - self.low_res_steps} at "
                  f"{self.size} px" if self.low_size else f"all at {self.size} px")
        return f"{self.total_steps} steps {why}: {phases}"


def plan_phases(*, epochs: int, steps_per_epoch: int, size: int, low_size: int | None, low_fraction: float,
                max_steps: int | None = None, budget_seconds: float | None = None,
                pace: Pace | None = None) -> PhasePlan:
    """The steps to run and where the low-resolution phase ends. With ``budget_seconds`` (the time limit left)
    and a ``pace``, the length is what fits the budget — the low-resolution share stays ``low_fraction`` of
    the steps actually run, so the full-resolution phase is reached — capped by ``epochs``/``max_steps``."""
    asked = epochs * steps_per_epoch
    total, basis = asked, "epochs"
    if max_steps and max_steps < total:
        total, basis = max_steps, "max steps"
    notes = []
    if budget_seconds is not None and pace is not None:
        low = (low_size or size)
        per_step = (low_fraction * pace.step(low) + (1 - low_fraction) * pace.step(size) if low_size
                    else pace.step(size)) + pace.validation / steps_per_epoch
        fits = int(max(0.0, budget_seconds) * _BUDGET_SHARE / per_step) if per_step > 0 else total
        if fits < total:
            total, basis = max(1, fits), "time limit"
            notes.append(f"the time limit fits about {total} of the {asked} steps --epochs {epochs} asks for "
                         f"({total / steps_per_epoch:.1f} epochs); the schedule"
                         f"{' and the resolution phases were' if low_size else ' was'} planned for {total} steps")
    low_steps = int(round(low_fraction * total)) if low_size else 0
    return PhasePlan(total, low_steps, size, low_size, steps_per_epoch, basis, asked, notes)


def replan_switch(plan: PhasePlan, step: int, pace: Pace, seconds_left: float) -> int | None:
    """During the low-resolution phase: the latest step to switch to full resolution at so that the planned
    number of full-resolution steps still fits ``seconds_left`` at the measured pace (``step`` itself when
    nothing fits); None when the plan as it stands fits."""
    if not plan.low_size or step >= plan.low_res_steps or plan.seconds(pace, step) <= seconds_left:
        return None
    full = plan.total_steps - plan.low_res_steps
    switch = plan.low_res_steps
    while switch > step and replace(plan, total_steps=switch + full, low_res_steps=switch).seconds(
            pace, step) > seconds_left:
        switch -= 1
    return switch


def eta_seconds(plan: PhasePlan, step: int, pace: Pace, limit_left: float | None) -> float:
    """Seconds until training ends: the steps left at the measured pace per resolution, never beyond the limit."""
    left = plan.seconds(pace, step)
    return left if limit_left is None else max(0.0, min(left, limit_left))
