"""Accuracy-aware INT8 (``compress --max-dice-drop``): return the most Dice-sensitive nodes to float, a few at a
time, until every limit holds on the tuning cases or the time budget is spent; then quantize back any of
them the limits can do without.

Every trial builds the *target's own* artifact (OpenVINO through NNCF, ONNX Runtime QDQ, TensorRT QDQ) with
a float plan and scores it with :class:`~edgeseg.tuning.scorer.TuningScorer`, so the limit is checked on what
will be deployed; the order comes from the per-node sensitivity ranking (:mod:`edgeseg.tuning.sensitivity`).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError, UsageError


@dataclass
class DiceLimits:
    """Largest allowed mean Dice drop per label in points (0.01 Dice) against FP32 on the tuning cases;
    a structure of the FP32 masks that vanishes in any tuning case also breaks the limits."""

    max_drop: float
    per_label: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, max_drop: float, per_label: str | None) -> "DiceLimits":
        """``per_label``: ``"lung=0.3,nodule=1.0"``."""
        limits = {}
        for item in filter(None, (per_label or "").split(",")):
            name, _, value = item.partition("=")
            try:
                limits[name.strip()] = float(value)
            except ValueError:
                raise UsageError(f"--per-label expects LABEL=POINTS pairs, got {item!r}"[:200]) from None
        from edgeseg.benchmark.settings import check_limit

        check_limit(max_drop, "--max-dice-drop")  # NaN would hold or break every check
        for name, points in limits.items():
            check_limit(points, f"--per-label {name}")
        return cls(max_drop, limits)

    def check(self, score: dict, labels: list[str]) -> list[str]:
        """What breaks the limits in a :meth:`TuningScorer.score` result (empty: all hold)."""
        unknown = set(self.per_label) - set(score["delta"])
        if unknown:
            raise EdgesegError(f"--per-label names {sorted(unknown)}; the model's labels are {labels[1:]}")
        problems = [f"{lab} {d * 100:+.2f} pts (limit -{self.per_label.get(lab, self.max_drop):g})"
                    for lab, d in score["delta"].items() if -d * 100 > self.per_label.get(lab, self.max_drop)]
        if score["vanished"]:
            case, label = score["vanished"][0]
            problems.append(f"{len(score['vanished'])} structure(s) vanished (e.g. {label} in {case})")
        return problems

    def excess(self, score: dict) -> float:
        """How far a score is from the limits (0 when they hold): points over, plus 100 per vanished structure."""
        over = sum(max(0.0, -d * 100 - self.per_label.get(lab, self.max_drop)) for lab, d in score["delta"].items())
        return over + 100 * len(score["vanished"])

    def slack(self, score: dict) -> float:
        """Points left before the tightest limit breaks (negative when over; −100 per vanished structure): a
        continuous metric for searches that take one number, e.g. NNCF's accuracy control."""
        room = min(self.per_label.get(lab, self.max_drop) + d * 100 for lab, d in score["delta"].items())
        return room - 100 * len(score["vanished"])

    def to_dict(self) -> dict:
        return {"max_dice_drop_points": self.max_drop, "per_label_points": self.per_label}

    def describe(self, labels: list[str]) -> str:
        """Each foreground label's limit as text: ``"lung ≤ 0.3 pts, nodule ≤ 1 pts"``."""
        return ", ".join(f"{lab} ≤ {self.per_label.get(lab, self.max_drop):g} pts" for lab in labels)


class TargetTrial:
    """Build one target's artifact with a float plan, score it on the tuning cases, time variants of it."""

    def __init__(self, profile, fp32_onnx: Path, calibration: dict, model_size: tuple[int, ...], scorer,
                 threads: int | None, work: Path):
        self.profile, self.fp32_onnx, self.calibration = profile, fp32_onnx, calibration
        self.model_size, self.scorer, self.threads, self.work = model_size, scorer, threads, work
        self.cache = work / f"{profile.name}.calibration.json"  # ORT/TensorRT: calibrate once for all trials

    def build(self, float_nodes: list[dict], options: dict | None = None, key: str = "trial") -> Artifact:
        """The artifact (``root`` = its own folder ``work/key``) for this float plan."""
        from edgeseg.targets import get_target
        from edgeseg.targets.base import BuildRequest

        out = self.work / key
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        request = BuildRequest(fp32_onnx=self.fp32_onnx, out_dir=out, profile=self.profile,
                               calibration=self.calibration, model_size=self.model_size, float_nodes=float_nodes,
                               metadata={}, options={"calibration_cache": self.cache, **(options or {})})
        return replace(get_target(self.profile.target).build(request), root=out)

    def __call__(self, float_nodes: list[dict], options: dict | None = None) -> dict:
        from edgeseg.benchmark.runners import load_runners

        artifact = self.last_artifact = self.build(float_nodes, options)
        runners, others = load_runners([artifact], artifact.root, {artifact.name: self.threads})
        if artifact.name not in runners:
            raise EdgesegError(f"{self.profile.name}: cannot run a trial here: {others[artifact.name][1]}")
        return self.scorer.score(runners[artifact.name])

    def timing_unavailable(self) -> str | None:
        """Why this target's latency cannot be measured here (e.g. TensorRT absent), else None."""
        from edgeseg.targets import get_target

        return get_target(self.profile.target).missing()

    def latencies(self, variants: dict[str, tuple[list[dict], dict | None]], repeats: int = 30) -> dict[str, dict]:
        """Batch-1 latency summary of each ``{name: (float plan, build options)}`` variant, each built and timed
        in its own process, interleaved over two rounds (one run, one machine: compare them as ratios)."""
        from edgeseg.benchmark.isolated import measure_isolated

        artifacts = [replace(self.build(plan, options, f"latency-{i}"), name=name)
                     for i, (name, (plan, options)) in enumerate(variants.items())]
        sample = self.calibration[tuple(self.model_size)][:1]
        return measure_isolated(self.work, artifacts, sample, {a.name: self.threads for a in artifacts},
                                repeats=repeats, rounds=2)


def _summary(score: dict) -> dict:
    return {"delta_points": {k: round(v * 100, 4) for k, v in score["delta"].items()},
            "agreement": score["agreement"], "vanished": len(score["vanished"])}


def _give_back(added, score, run, plan_for, limits, labels, within_budget):
    """Quantize again the added nodes the limits can do without, in halving chunks (least sensitive first):
    a chunk that keeps the limits goes back to INT8 whole, one that breaks them is split. ~2·k·log2(n)
    trials for k needed nodes out of n, instead of n one at a time."""
    if len(added) < 2:
        return added, score  # without its one node the plan is the all-INT8 model, which broke the limits
    half = len(added) // 2
    chunks = [c for c in (added[half:][::-1], added[:half][::-1]) if c]  # the whole set is the all-INT8 model
    while chunks and within_budget():
        chunk = chunks.pop(0)
        fewer = [n for n in added if n not in chunk]
        trial_score = run(plan_for(fewer), f"-{len(chunk)} float: {', '.join(n['name'] for n in chunk)}")
        if not limits.check(trial_score, labels):
            added, score = fewer, trial_score
        elif len(chunk) > 1:
            chunks[:0] = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]]
    return added, score


def search_float_nodes(trial, plan_for, ranking, limits: DiceLimits, labels: list[str],
                       budget_seconds: float, progress=None) -> dict:
    """Grow the float plan along ``ranking()`` (most sensitive first; 1, 1, 2, 4, … nodes a step) until
    ``limits`` hold or the budget is spent, then quantize back the added nodes the limits allow.
    ``plan_for(added)`` turns the added nodes into a whole float plan (preset included); ``ranking`` is only
    called when the all-INT8 model breaks the limits (ranking costs one trial per node). The give-back is
    :func:`_give_back`.

    Returns ``{"met", "float_nodes", "added", "score", "history", "seconds"}``; when the limits cannot be met,
    the plan with the smallest excess found is returned with ``met`` False."""
    start, history = time.perf_counter(), []

    def run(plan: list[dict], what: str) -> dict:
        score = trial(plan)
        history.append({"step": what, "float_nodes": len(plan), **_summary(score),
                        "problems": limits.check(score, labels), "seconds": round(time.perf_counter() - start, 1)})
        if progress:
            progress(history[-1])
        return score

    def within_budget() -> bool:
        return time.perf_counter() - start < budget_seconds

    score = run(plan_for([]), "all INT8 (preset float)")
    best = (limits.excess(score), [], score)
    added: list[dict] = []
    position, step = 0, 1
    ranked = ranking() if limits.check(score, labels) and within_budget() else []
    while limits.check(score, labels) and position < len(ranked) and within_budget():
        batch = ranked[position : position + step]
        position += len(batch)
        added += batch
        score = run(plan_for(added), f"+{len(batch)} float: {', '.join(n['name'] for n in batch)}")
        if limits.excess(score) < best[0]:
            best = (limits.excess(score), list(added), score)
        step = 1 if len(added) < 2 else min(2 * step, 8)
    met = not limits.check(best[2], labels)
    added, score = best[1], best[2]
    if met:  # the doubling steps may have added more than needed: give back what the limits allow
        added, score = _give_back(added, score, run, plan_for, limits, labels, within_budget)
    return {"met": met, "float_nodes": plan_for(added), "added": added, "score": _summary(score),
            "problems": limits.check(score, labels), "slack_points": round(limits.slack(score), 4), "history": history,
            "seconds": round(time.perf_counter() - start, 1)}
