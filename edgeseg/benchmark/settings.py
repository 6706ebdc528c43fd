"""The checks on what ``edgeseg bench`` and ``edgeseg gate`` are asked for, shared by the CLI and the Python API
(``edgeseg.bench``, ``edgeseg.gate``): a value that cannot mean anything is a :class:`UsageError` (exit 64), one
line naming the option, never a division by zero or a setting silently changed."""
from __future__ import annotations

import math
import numbers

from edgeseg.errors import UsageError
from edgeseg.validation import short

# BenchConfig field → (its option, smallest value, what the smallest means when it is not obvious)
BENCH_COUNTS = {"max_cases": ("--cases", 0, "0: all"), "threads": ("--threads", 1, "omit it: every usable core"),
                "repeats": ("--repeats", 1, ""), "rounds": ("--rounds", 1, ""), "warmup": ("--warmup", 0, ""),
                "batch_size": ("--batch-size", 0, "0 or 1: batch 1 only"), "e2e_cases": ("--e2e-cases", 0, "")}


def check_count(value, option: str, lo: int, hint: str = "") -> int:
    """An integer ≥ ``lo`` (booleans, floats and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise UsageError(f"{option} must be an integer ≥ {lo}{f' ({hint})' if hint else ''}, got {short(value, 40)}")
    return value


def check_limit(value, option: str) -> float:
    """A limit: a finite number ≥ 0 (NaN would hold or break every check, ∞ would hold them all)."""
    try:
        number = math.nan if isinstance(value, bool) or not isinstance(value, numbers.Real) else float(value)
    except OverflowError:  # an integer no float holds
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{option} must be a finite number ≥ 0, got {short(value, 40)}")
    return number


def check_bench_settings(cfg) -> None:
    """Refuse a :class:`~edgeseg.benchmark.harness.BenchConfig` whose counts or Dice limits mean nothing."""
    for name, (option, lo, hint) in BENCH_COUNTS.items():
        value = getattr(cfg, name)
        if value is not None:
            check_count(value, option, lo, hint)
    limits = cfg.limits or {}
    if not isinstance(limits, dict) or not isinstance(limits.get("per_label_points") or {}, dict):
        raise UsageError("limits: expected {\"max_dice_drop_points\": POINTS, \"per_label_points\": {LABEL: POINTS}}")
    if "max_dice_drop_points" in limits:
        check_limit(limits["max_dice_drop_points"], "--max-dice-drop")
    for label, points in (limits.get("per_label_points") or {}).items():
        check_limit(points, f"--per-label {label}")
