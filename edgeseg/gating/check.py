"""The gate: compare bench results with a baseline under latency and Dice limits; one check per artifact,
metric and label, each passed or failed with the numbers that decided it."""
from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeseg.benchmark.settings import check_limit
from edgeseg.data.io import read_toml
from edgeseg.errors import EdgesegError, InputError, UsageError
from edgeseg.gating.baseline import MODES, rounds_shortfall, summarize_runs, too_few_rounds
from edgeseg.gating.baseline_schema import check_baseline

Z = 3.0                  # standard errors a change must exceed to count as more than noise
# The run-to-run σ of a latency (÷ workload) between bench runs of an unchanged bundle: the floor of the noise
# band uses the one measured between the baseline's runs, never below MIN_RUN_SIGMA; a baseline from a single
# run has none and gets ASSUMED_RUN_SIGMA (measured on the development machine: docs/gate.md, "Noise floor").
MIN_RUN_SIGMA = 0.02
ASSUMED_RUN_SIGMA = 0.05
# A confirmed slowdown: the runs pooled beyond the limit and the band, and each run on its own slower than this
# fraction of the limit. Not the whole limit: on a busy machine ÷ workload reads a real slowdown low (an inserted
# +25 % read as +10 % to +27 % with one core 30 % busy; docs/gate.md, "Confirmation run").
CONFIRM_FRACTION = 0.5


@dataclass
class GateLimits:
    max_latency_regression: float = 0.10         # fraction: 0.10 = 10 % slower than the baseline
    max_dice_drop: float = 0.5                   # Dice points (0.01 Dice) below the baseline, any label
    per_label: dict[str, float] = field(default_factory=dict)
    metric: str = "p50"                          # p50 | p90
    mode: str = "auto"                           # auto | workload | reference | absolute
    allow_vanished: list[str] = field(default_factory=list)  # "case:label" globs a vanished structure may match
    allow_device_mismatch: bool = False
    every_run: bool = False  # latency over several results: pooled beyond the band, each run > CONFIRM_FRACTION × limit
    max_explanation_drift: str | dict | None = None  # see edgeseg.gating.explanation (default there when explained)

    def __post_init__(self):
        self.check_values()

    def check_values(self) -> None:
        """Refuse limits that cannot judge anything (NaN, ∞, negative, not a number): a usage error, one line."""
        if self.metric not in ("p50", "p90"):
            raise UsageError(f"--metric must be p50 or p90, got {str(self.metric)[:40]!r}")
        if self.mode not in ("auto", *MODES):
            raise UsageError(f"--mode must be one of auto, {', '.join(MODES)}; got {str(self.mode)[:40]!r}")
        check_limit(self.max_latency_regression, "--max-latency-regression")
        check_limit(self.max_dice_drop, "--max-dice-drop")
        if not isinstance(self.per_label, dict):
            raise UsageError(f"per_label: expected {{label: points}}, got {type(self.per_label).__name__}")
        for label, points in self.per_label.items():
            check_limit(points, f"--max-dice-drop {label}")
        globs = self.allow_vanished
        if not isinstance(globs, (list, tuple)) or not all(isinstance(g, str) for g in globs):
            raise UsageError("--allow-vanished: expected a list of CASE:LABEL globs")


def parse_fraction(text: str | float) -> float:
    """``"10%"`` → 0.10, ``"0.1"`` → 0.10."""
    raw = str(text).strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"--max-latency-regression expects e.g. 10% or 0.1, got {str(text)[:40]!r}") from None


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
        raise UsageError(f"--max-dice-drop expects POINTS or LABEL=POINTS pairs, got {str(text)[:80]!r}") from None
    return default, per_label


def load_limits_file(path: Path) -> dict:
    """GateLimits fields from a TOML file (``max_latency_regression = "10%"``, ``max_dice_drop = 0.5`` or a
    ``[max_dice_drop]`` table per label, ``metric``, ``mode``, ``allow_vanished = ["case:label", …]``,
    ``max_explanation_drift = "iou:0.4"`` or a ``[max_explanation_drift]`` table)."""
    data = read_toml(path)
    known = {"max_latency_regression", "max_dice_drop", "metric", "mode", "allow_vanished", "max_explanation_drift"}
    if unknown := set(data) - known:
        raise EdgesegError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    out: dict = {k: data[k] for k in ("metric", "mode", "max_explanation_drift") if k in data}
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
    advisory: bool = False      # shown, never failing: latency against a baseline of another device class

    def undecided(self, limit: float) -> bool:
        """A latency check that passed only because the noise band was wider than the change, which is over the
        limit: more rounds (a re-run) decide it."""
        return (self.check.startswith("latency") and self.passed and not self.advisory and isinstance(self.current, float)
                and isinstance(self.baseline, float) and self.baseline > 0 and self.current / self.baseline - 1 > limit)


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
    it fails in each of them (a slowdown must reproduce in independent runs). A baseline entry the results lack (an
    artifact, a timing, a label's Dice) is a failed check; nothing to compare at all is unusable input."""
    limits.check_values()
    check_baseline(baseline, "baseline")
    if summary["device_class"] != baseline["device_class"] and not limits.allow_device_mismatch:
        raise EdgesegError(f"results are from device class {summary['device_class']}, the baseline from "
                           f"{baseline['device_class']}: keep one baseline per class "
                           "(benchmarks/baselines/<device-class>.json) or pass --allow-device-mismatch")
    if summary["data"]["fingerprint"] != baseline["data"]["fingerprint"]:
        raise EdgesegError(f"results were measured on other cases than the baseline ({summary['data']['dataset']} "
                           f"{len(summary['data']['cases'])} cases vs {baseline['data']['dataset']} "
                           f"{len(baseline['data']['cases'])}): Dice is only comparable on the same cases")
    labels, notes = [*summary["model"]["labels"][1:], "foreground"], []
    if other_class := summary["device_class"] != baseline["device_class"]:
        notes.append(f"latency not judged (shown as info): the baseline was measured on {baseline['device_class']}, "
                     f"these results on {summary['device_class']}, and INT8 kernels differ between CPU generations "
                     "even ÷ workload (docs/gate.md, \"Another device class\"); Dice is gated. Commit a baseline "
                     "for this class with --update-baseline to gate latency")
    if unknown := set(limits.per_label) - set(labels):
        raise EdgesegError(f"--max-dice-drop names {sorted(unknown)}; the model's labels are {labels[:-1]}")
    mode, mode_notes = resolve_mode(limits, summary, baseline)
    # auto on CPU also divides each INT8/FP16 artifact by its runtime's FP32 artifact: either denominator can
    # confirm a slowdown (docs/gate.md, "Two denominators")
    modes = [mode, "runtime_fp32"] if limits.mode == "auto" and mode == "workload" else [mode]
    notes = [*mode_notes, *notes]
    _check_rounds(summary, baseline, limits, per_run)
    notes += [n for m in modes for n in _floor_notes(baseline, limits.metric, m)]
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
        for latency_mode in modes:
            if limits.every_run and per_run and len(per_run) > 1:
                checks += _every_run(name, base, current, [r["artifacts"].get(name) for r in per_run], limits,
                                     latency_mode, baseline)
            else:
                checks += _latency_check(name, base, current, limits, latency_mode, baseline)
        if other_class:
            for chk in (c for c in checks if c.artifact == name and c.check.startswith("latency")):
                chk.advisory, chk.passed = True, True
        checks += _accuracy_checks(name, base, current, limits)
        checks += _vanished_checks(name, current, limits)
    for name in set(summary["artifacts"]) - set(baseline["artifacts"]):
        notes.append(f"{name}: not in the baseline, not gated (update the baseline to gate it)")
    if not any(not c.advisory for c in checks):
        raise InputError("nothing to gate: no artifact of the baseline has a Dice, agreement, latency or presence to "
                         "judge in these results; re-create the baseline from results that measured the bundle")
    return {"passed": all(c.passed for c in checks), "checks": checks, "notes": notes, "mode": " + ".join(modes),
            "metric": limits.metric, "device_class": summary["device_class"], "runs": summary["runs"],
            "baseline_runs": baseline.get("runs"), "limits": asdict(limits)}


def gate_runs(runs: list[dict], baseline: dict, limits: GateLimits) -> dict:
    """:func:`run_gate` for bench results ``runs``, pooled (with ``limits.every_run``: each run also on its own)."""
    per_run = [summarize_runs([r]) for r in runs] if limits.every_run else None
    return run_gate(summarize_runs(runs), baseline, limits, per_run)


def noise_band(baseline: dict, current: dict, z: float = Z) -> float:
    """The relative change two timing medians can show by chance within runs: ``z`` standard errors of their
    difference, each median's standard error ≈ 1.253 σ/√n with σ the rounds' robust relative spread (n rounds)."""
    def var(side):
        n = max(len(side.get("rounds") or []), 1)
        return (1.253 * side.get("sigma", 0.0)) ** 2 / n

    return float(z * (var(baseline) + var(current)) ** 0.5)


def run_sigma(baseline: dict, runtime: str, metric: str, mode: str) -> tuple[float, str]:
    """(σ between bench runs for ``runtime``, where it comes from): the baseline's recorded run-to-run spread
    (at least :data:`MIN_RUN_SIGMA`), or :data:`ASSUMED_RUN_SIGMA` for a baseline from a single run."""
    rec = (((baseline.get("run_sigma") or {}).get(metric) or {}).get(mode) or {}).get(runtime)
    if rec and rec.get("dof", 0) >= 1:
        sigma = max(float(rec["sigma"]), MIN_RUN_SIGMA)
        return sigma, f"σ {sigma:.1%} between the baseline's runs"
    why = "baseline from one run" if baseline.get("runs", 1) <= 1 else "the baseline does not record it: re-create it"
    return ASSUMED_RUN_SIGMA, f"σ {ASSUMED_RUN_SIGMA:.0%} between runs assumed ({why})"


def run_floor(baseline: dict, base: dict, current: dict, runtime: str, metric: str, mode: str,
              z: float = Z) -> float:
    """The noise band's floor: ``z`` run-to-run standard errors of the difference between the median of the
    baseline's k_b runs and of the current k_c runs, ``z σ_run √(1/k_b + 1/k_c)``."""
    sigma, _ = run_sigma(baseline, runtime, metric, mode)
    return float(z * sigma * (1 / max(base.get("runs", 1), 1) + 1 / max(current.get("runs", 1), 1)) ** 0.5)


def _floor_notes(baseline: dict, metric: str, mode: str) -> list[str]:
    """One note per runtime of the baseline: where its run-to-run σ comes from."""
    runtimes = sorted({a["runtime"] for a in baseline["artifacts"].values() if mode in a["latency"].get(metric, {})})
    return [f"noise floor {rt} ({MODE_TEXT[mode]}): {run_sigma(baseline, rt, metric, mode)[1]}" for rt in runtimes]


def _check_rounds(summary: dict, baseline: dict, limits: GateLimits, per_run: list[dict] | None) -> None:
    """Refuse to judge latency from fewer than MIN_ROUNDS rounds on either side (each run with ``every_run``)."""
    if short := rounds_shortfall(baseline, limits.metric):
        raise too_few_rounds("the baseline", short)
    sides = per_run if limits.every_run and per_run and len(per_run) > 1 else [summary]
    for i, side in enumerate(sides, 1):
        if short := rounds_shortfall(side, limits.metric):
            raise too_few_rounds(f"run {i} of {len(sides)}" if len(sides) > 1 else "the results", short)


MODE_TEXT = {"workload": "÷ workload", "reference": "÷ FP32 reference", "absolute": "ms",
             "runtime_fp32": "÷ FP32 on its runtime"}


def _every_run(name, base, pooled, currents, limits, mode, baseline) -> list[Check]:
    """Latency over several runs (a re-run confirming a slowdown): fails when the runs pooled are slower beyond
    the limit and the noise band (more rounds, a narrower band) *and* each run on its own is slower than
    CONFIRM_FRACTION of the limit — a slowdown that one noisy run shows and the next does not is not confirmed."""
    checks = _latency_check(name, base, pooled, limits, mode, baseline)
    per_run = [chk for c in currents if c for chk in _latency_check(name, base, c, limits, mode, baseline)]
    if not checks or not per_run:
        return checks
    chosen, n = checks[0], len(currents)
    changes = [c.current / c.baseline - 1 if c.current is not None else None for c in per_run]
    each = CONFIRM_FRACTION * limits.max_latency_regression
    # a run without this timing is no evidence against the slowdown: only a run measured within clears it
    within = [i for i, change in enumerate(changes, 1) if change is not None and change <= each]
    runs = ", ".join("n/a" if c is None else f"{c:+.1%}" for c in changes)
    if chosen.passed:
        chosen.message += f" [{n} runs pooled: {runs}]"
    elif within:
        chosen.passed = True
        chosen.message += f" [not confirmed: run {within[0]} of {n} not slower than +{each:.0%}; runs {runs}]"
    else:
        chosen.message += f" [confirmed: every run slower than +{each:.0%}: {runs}]"
    return [chosen]


def _latency_check(name, base, current, limits, mode, baseline) -> list[Check]:
    b = base["latency"].get(limits.metric, {}).get(mode)
    c = current["latency"].get(limits.metric, {}).get(mode)
    if b is None:
        return []  # not timed in the baseline (accuracy-only artifact, or the reference in ÷ reference mode)
    if mode == "workload" and c is not None and b.get("runtime", "onnxruntime") != c.get("runtime", "onnxruntime"):
        # divided by the workload of different runtimes: not comparable; the FP32 reference still is
        why = (f"the baseline divided by the {b.get('runtime', 'onnxruntime')} workload, the results by the "
               f"{c['runtime']} one")
        fallback = _latency_check(name, base, current, limits, "reference", baseline)
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
    within, floor = noise_band(b, c), run_floor(baseline, b, c, base["runtime"], limits.metric, mode)
    noise = max(within, floor)
    allowed = max(limits.max_latency_regression, noise)
    passed = change <= allowed
    tail = ("" if passed and change <= limits.max_latency_regression else
            ": over the limit but within the noise band, not a regression" if passed else
            ": slower beyond the limit and the noise band")
    ms = base["latency"][limits.metric]["absolute"]["value"], current["latency"][limits.metric]["absolute"]["value"]
    why = (f"{change:+.1%} (limit +{limits.max_latency_regression:.0%}, noise band {noise:.1%} = max(rounds "
           f"{within:.1%}, run-to-run {floor:.1%}); {ms[0]:.2f} → {ms[1]:.2f} ms){tail}")
    return [Check(name, what, passed, b["value"], c["value"], f"+{limits.max_latency_regression:.0%}", why, noise)]


def _accuracy_checks(name, base, current, limits) -> list[Check]:
    """Dice per label of the baseline (agreement with the FP32 reference where the results have only that: unlabelled
    data); a label the baseline has and the results lack fails: no evidence is not a pass."""
    unlabelled = not current.get("dice") and current.get("agreement") and base.get("agreement")
    key = "agreement" if unlabelled or not base.get("dice") else "dice"
    b, c = base.get(key) or {}, current.get(key) or {}
    checks = []
    for label, before in b.items():
        limit = limits.per_label.get(label, limits.max_dice_drop)
        if label not in c:
            what = "no accuracy at all" if not (current.get("dice") or current.get("agreement")) else f"no {key} of it"
            checks.append(Check(name, f"{key} {label}", False, before, None, f"-{limit:g} pts",
                                f"in the baseline, not in the results ({what}): nothing to compare"))
            continue
        change = (c[label] - before) * 100
        checks.append(Check(name, f"{key} {label}", -change <= limit, before, c[label], f"-{limit:g} pts",
                            f"{change:+.2f} pts (limit -{limit:g})"))
    return checks


def _vanished_checks(name, current, limits) -> list[Check]:
    """Structures of the FP32 masks that vanished; none said only where the results measured accuracy."""
    if not (current.get("dice") or current.get("agreement")):
        return []  # not measured: the accuracy checks of a baseline that had it fail already
    blocked = [v for v in current["vanished"] if not any(fnmatch.fnmatch(v, p) for p in limits.allow_vanished)]
    allowed = len(current["vanished"]) - len(blocked)
    note = f" ({allowed} allowed by --allow-vanished)" if allowed else ""
    if blocked:
        return [Check(name, "vanished", False, 0, len(blocked), "0",
                      f"a structure of the FP32 masks vanished: {', '.join(blocked[:5])}{note}")]
    return [Check(name, "vanished", True, 0, 0, "0", f"no structure vanished{note}")]
