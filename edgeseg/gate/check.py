"""The gate: compare bench results with a baseline under latency and Dice limits; one check per artifact,
metric and label, each passed or failed with the numbers that decided it."""
from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.io import read_toml
from ..errors import EdgesegError
from .baseline import MODES


@dataclass
class GateLimits:
    max_latency_regression: float = 0.10         # fraction: 0.10 = 10 % slower than the baseline
    max_dice_drop: float = 0.5                   # Dice points (0.01 Dice) below the baseline, any label
    per_label: dict[str, float] = field(default_factory=dict)
    metric: str = "p50"                          # p50 | p90
    mode: str = "auto"                           # auto | workload | reference | absolute
    allow_vanished: list[str] = field(default_factory=list)  # "case:label" globs a vanished structure may match
    allow_device_mismatch: bool = False
    every_run: bool = False  # latency: judge each result on its own; fail only when all of them are slower

    def check_values(self) -> None:
        if self.metric not in ("p50", "p90"):
            raise EdgesegError(f"--metric must be p50 or p90, got {self.metric!r}")
        if self.mode not in ("auto", *MODES):
            raise EdgesegError(f"--mode must be one of auto, {', '.join(MODES)}; got {self.mode!r}")
        if self.max_latency_regression < 0 or self.max_dice_drop < 0 or any(v < 0 for v in self.per_label.values()):
            raise EdgesegError("gate limits must be ≥ 0")


def parse_fraction(text: str | float) -> float:
    """``"10%"`` → 0.10, ``"0.1"`` → 0.10."""
    raw = str(text).strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise EdgesegError(f"--max-latency-regression expects e.g. 10% or 0.1, got {text!r}") from None


def parse_dice_limits(text: str | float | dict) -> tuple[float | None, dict[str, float]]:
    """``"0.5"``, ``"lung=0.3,nodule=1.0"`` or ``"0.5,nodule=1.0"`` (or a TOML table) → (default, per label)."""
    if isinstance(text, dict):
        items = [f"{k}={v}" for k, v in text.items()]
    else:
        items = [s.strip() for s in str(text).split(",") if s.strip()]
    default, per_label = None, {}
    try:
        for item in items:
            if "=" in item:
                name, value = item.split("=", 1)
                per_label[name.strip()] = float(value)
            else:
                default = float(item)
    except ValueError:
        raise EdgesegError(f"--max-dice-drop expects POINTS or LABEL=POINTS pairs, got {text!r}") from None
    return default, per_label


def load_limits_file(path: Path) -> dict:
    """GateLimits fields from a TOML file (``max_latency_regression = "10%"``, ``max_dice_drop = 0.5`` or a
    ``[max_dice_drop]`` table per label, ``metric``, ``mode``, ``allow_vanished = ["case:label", …]``)."""
    data = read_toml(path)
    known = {"max_latency_regression", "max_dice_drop", "metric", "mode", "allow_vanished"}
    if unknown := set(data) - known:
        raise EdgesegError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    out: dict = {k: data[k] for k in ("metric", "mode") if k in data}
    if "max_latency_regression" in data:
        out["max_latency_regression"] = parse_fraction(data["max_latency_regression"])
    if "max_dice_drop" in data:
        default, per_label = parse_dice_limits(data["max_dice_drop"])
        out.update({"per_label": per_label}, **({"max_dice_drop": default} if default is not None else {}))
    if "allow_vanished" in data:
        out["allow_vanished"] = [str(v) for v in data["allow_vanished"]]
    return out


@dataclass
class Check:
    artifact: str
    check: str                  # "latency p50 (÷ workload)", "dice lung", "vanished", "present"
    passed: bool
    baseline: float | str | None
    current: float | str | None
    limit: str
    message: str
    noise: float | None = None  # the noise band of a latency check, as a fraction


def resolve_mode(limits: GateLimits, summary: dict, baseline: dict) -> tuple[str, list[str]]:
    """The latency mode to use and notes: ``auto`` → ÷ workload on CPU classes, absolute elsewhere; without a
    workload in both, ÷ reference."""
    mode, notes = limits.mode, []
    if mode == "auto":
        mode = "workload" if summary["device_class"].startswith("cpu-") else "absolute"
    if mode == "workload" and not (summary.get("workload") and summary["workload"] == baseline.get("workload")):
        notes.append("no common fixed workload in the results and the baseline: latency relative to the FP32 reference")
        mode = "reference"
    return mode, notes


def run_gate(summary: dict, baseline: dict, limits: GateLimits, per_run: list[dict] | None = None) -> dict:
    """``{"passed", "checks": [Check], "notes", "mode", ...}`` for a :func:`summarize_runs` summary.
    With ``limits.every_run``, ``per_run`` holds one summary per result and a latency check fails only when
    it fails in each of them (a slowdown must reproduce in independent runs)."""
    limits.check_values()
    if summary["device_class"] != baseline["device_class"] and not limits.allow_device_mismatch:
        raise EdgesegError(f"results are from device class {summary['device_class']}, the baseline from "
                           f"{baseline['device_class']}: keep one baseline per class "
                           "(benchmarks/baselines/<device-class>.json) or pass --allow-device-mismatch")
    if summary["data"]["fingerprint"] != baseline["data"]["fingerprint"]:
        raise EdgesegError(f"results were measured on other cases than the baseline ({summary['data']['dataset']} "
                           f"{len(summary['data']['cases'])} cases vs {baseline['data']['dataset']} "
                           f"{len(baseline['data']['cases'])}): Dice is only comparable on the same cases")
    labels = [*summary["model"]["labels"][1:], "foreground"]
    if unknown := set(limits.per_label) - set(labels):
        raise EdgesegError(f"--max-dice-drop names {sorted(unknown)}; the model's labels are {labels[:-1]}")
    mode, notes = resolve_mode(limits, summary, baseline)
    checks: list[Check] = []
    for name, base in baseline["artifacts"].items():
        current = summary["artifacts"].get(name)
        if current is None:
            checks.append(Check(name, "present", False, base["status"], "missing", "present",
                                "in the baseline but not in the results"))
            continue
        if base["status"] == "measured" and current["status"] != "measured":
            checks.append(Check(name, "present", False, "measured", current["status"], "measured",
                                f"was measured in the baseline, now {current['status']}"))
            continue
        if limits.every_run and per_run and len(per_run) > 1:
            checks += _every_run(name, base, [r["artifacts"].get(name) for r in per_run], limits, mode)
        else:
            checks += _latency_check(name, base, current, limits, mode)
        checks += _accuracy_checks(name, base, current, limits)
        checks += _vanished_checks(name, current, limits)
    for name in set(summary["artifacts"]) - set(baseline["artifacts"]):
        notes.append(f"{name}: not in the baseline, not gated (update the baseline to gate it)")
    return {"passed": all(c.passed for c in checks), "checks": checks, "notes": notes, "mode": mode,
            "metric": limits.metric, "device_class": summary["device_class"], "runs": summary["runs"],
            "baseline_runs": baseline.get("runs"), "limits": asdict(limits)}


def noise_band(baseline: dict, current: dict, z: float = 3.0) -> float:
    """The relative change two timing medians can show by chance: ``z`` standard errors of their difference,
    each median's standard error ≈ 1.253 σ/√n with σ the rounds' robust relative spread (n rounds)."""
    def var(side):
        n = max(len(side.get("rounds") or []), 1)
        return (1.253 * side.get("sigma", 0.0)) ** 2 / n

    return float(z * (var(baseline) + var(current)) ** 0.5)


MODE_TEXT = {"workload": "÷ workload", "reference": "÷ FP32 reference", "absolute": "ms"}


def _every_run(name, base, currents, limits, mode) -> list[Check]:
    """The latency check of each run; passed if any passed (the one shown), failed if all failed."""
    judged = [(i, chk) for i, c in enumerate(currents, 1) if c for chk in _latency_check(name, base, c, limits, mode)]
    if not judged:
        return []
    passed = [(i, c) for i, c in judged if c.passed]
    i, chosen = (passed or judged)[0]
    verdict = f"run {i} of {len(currents)} within limits" if passed else f"failed in all {len(currents)} runs"
    chosen.message = f"{chosen.message} [{verdict}]"
    return [chosen]


def _latency_check(name, base, current, limits, mode) -> list[Check]:
    b = base["latency"].get(limits.metric, {}).get(mode)
    c = current["latency"].get(limits.metric, {}).get(mode)
    if b is None:
        return []  # not timed in the baseline (accuracy-only artifact, or the reference in ÷ reference mode)
    if mode == "workload" and c is not None and b.get("runtime", "onnxruntime") != c.get("runtime", "onnxruntime"):
        # divided by the workload of different runtimes: not comparable; the FP32 reference still is
        why = (f"the baseline divided by the {b.get('runtime', 'onnxruntime')} workload, the results by the "
               f"{c['runtime']} one")
        fallback = _latency_check(name, base, current, limits, "reference")
        for chk in fallback:
            chk.message += f" (÷ FP32 reference: {why}; update the baseline)"
        return fallback or [Check(name, f"latency {limits.metric} ({MODE_TEXT[mode]})", False, b["value"],
                                  c["value"], "comparable", f"{why}: not comparable; re-create the baseline with "
                                                            "--update-baseline")]
    what = f"latency {limits.metric} ({MODE_TEXT[mode]})"
    if c is None:
        return [Check(name, what, False, b["value"], None, "timed", "timed in the baseline, not now")]
    if not b["value"] > 0:
        raise EdgesegError(f"the baseline's {what} of {name} is {b['value']}: not a timing; re-create the baseline")
    change = c["value"] / b["value"] - 1
    noise = noise_band(b, c)
    allowed = max(limits.max_latency_regression, noise)
    passed = change <= allowed
    tail = ("" if passed and change <= limits.max_latency_regression else
            ": over the limit but within the noise band, not a regression" if passed else
            ": slower beyond the limit and the noise band")
    ms = base["latency"][limits.metric]["absolute"]["value"], current["latency"][limits.metric]["absolute"]["value"]
    why = (f"{change:+.1%} (limit +{limits.max_latency_regression:.0%}, noise band {noise:.1%}; "
           f"{ms[0]:.2f} → {ms[1]:.2f} ms){tail}")
    return [Check(name, what, passed, b["value"], c["value"], f"+{limits.max_latency_regression:.0%}", why, noise)]


def _accuracy_checks(name, base, current, limits) -> list[Check]:
    key = "dice" if base.get("dice") and current.get("dice") else "agreement"
    b, c = base.get(key) or {}, current.get(key) or {}
    checks = []
    for label in (lab for lab in b if lab in c):
        limit = limits.per_label.get(label, limits.max_dice_drop)
        change = (c[label] - b[label]) * 100
        checks.append(Check(name, f"{key} {label}", -change <= limit, b[label], c[label], f"-{limit:g} pts",
                            f"{change:+.2f} pts (limit -{limit:g})"))
    return checks


def _vanished_checks(name, current, limits) -> list[Check]:
    blocked = [v for v in current["vanished"] if not any(fnmatch.fnmatch(v, p) for p in limits.allow_vanished)]
    allowed = len(current["vanished"]) - len(blocked)
    note = f" ({allowed} allowed by --allow-vanished)" if allowed else ""
    if blocked:
        return [Check(name, "vanished", False, 0, len(blocked), "0",
                      f"a structure of the FP32 masks vanished: {', '.join(blocked[:5])}{note}")]
    return [Check(name, "vanished", True, 0, 0, "0", f"no structure vanished{note}")]
