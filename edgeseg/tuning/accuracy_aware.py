"""``compress --max-dice-drop``: one float plan per INT8 target that keeps the Dice drop within the limits.

The nodes are ranked once by their Dice sensitivity (ONNX Runtime QDQ, quantized one at a time, on the tuning
cases); then each target's search grows its float plan along that ranking, checking every trial on the
target's own artifact (:mod:`edgeseg.tuning.search`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgeseg.data.nnunet import NnUNetDataset, content_overlap
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import check_compatible, held_back_cases
from edgeseg.metrics import headline_label
from edgeseg.tuning.scorer import TuningScorer, tuning_cases
from edgeseg.tuning.search import DiceLimits, TargetTrial, search_float_nodes

log = logging.getLogger(__name__)


@dataclass
class AccuracyAwareSettings:
    limits: DiceLimits
    tune_data: Path | None = None     # labelled dataset; default: the calibration dataset's training cases
    tune_cases: int = 16
    budget_minutes: float = 10.0
    allow_miss: bool = False


def _tuning_scorer(settings, model, spec, calib, default_data: Path | None, eval_dataset, eval_ids, seed: int):
    from edgeseg.calibration import check_disjoint
    from edgeseg.inference import torch_predictor

    root = settings.tune_data or default_data
    if root is None:
        raise EdgesegError("--max-dice-drop needs labelled tuning cases: pass --tune-data DIR (its training "
                           "cases minus the calibration cases are used)")
    dataset = NnUNetDataset(root)
    check_compatible(spec, dataset)
    # every held-back image of the evaluation data, by content (bench evaluates the whole split)
    evaluated = (set(eval_dataset.case_hashes(held_back_cases(spec, eval_dataset, seed)).values())
                 if eval_dataset else set())
    ids = tuning_cases(spec, dataset, calib, "train", settings.tune_cases, seed, evaluated)
    shared = content_overlap(dataset.case_hashes(ids), eval_dataset.case_hashes(eval_ids)) if eval_dataset else []
    if shared:
        ours, theirs = (d.cases[c].image_files[0] for d, c in zip((dataset, eval_dataset), shared[0]))
        raise EdgesegError(f"tuning cases overlap the {len(shared)} evaluated cases by content (e.g. {ours} = "
                           f"{theirs}); pass --tune-data with other cases")
    check_disjoint(calib, dataset, ids, "tuning")
    return TuningScorer(torch_predictor(model), spec, dataset, ids)


@dataclass
class TuningInputs:
    """What the search works on (from ``compress``): the FP32 model — the reference every trial is scored
    against — and its ONNX export, the calibration set, the float-plan options of ``plan_float_nodes``
    (``{"preset", "keep_float", "quantize"}``), the dataset of the tuning cases when ``--tune-data`` is not
    given, the evaluated data (tuning cases must not share content with it), threads, a work folder, the seed."""

    model: object
    spec: object
    fp32_onnx: Path
    calib: object                      # edgeseg.calibration.CalibrationSet
    plan_options: dict
    default_data: Path | None
    eval_dataset: NnUNetDataset | None
    eval_ids: list[str]
    threads: int | None
    work: Path
    seed: int = 0


class _FloatPlanner:
    """Whole float plans: the one of the plan options, plus the nodes the search returned to float (each with
    the Dice it cost, as its reason)."""

    def __init__(self, fp32_onnx: Path, plan_options: dict):
        import onnx

        self.source, self.options = onnx.load(str(fp32_onnx)), plan_options

    def __call__(self, added: list[dict]) -> list[dict]:
        from edgeseg.targets.float_nodes import plan_float_nodes

        reasons = {n["name"]: f"accuracy-aware: quantized alone it cost {n['worst_label_cost'] * 100:.2f} Dice pts "
                              f"on the tuning cases" for n in added}
        plan = plan_float_nodes(self.source, self.options["preset"], [*self.options["keep_float"], *reasons],
                                self.options["quantize"])
        for entry in plan:
            entry["reason"] = reasons.get(entry["name"], entry["reason"])
        return plan


class _Ranking:
    """The quantized nodes ranked by Dice sensitivity (ONNX Runtime QDQ, one node at a time): measured once, and
    only when some target needs it (``()`` → the rows, most sensitive first)."""

    def __init__(self, inputs: TuningInputs, planner: _FloatPlanner, scorer):
        self.inputs, self.planner, self.scorer, self.measured = inputs, planner, scorer, {}

    def __call__(self) -> list[dict]:
        from edgeseg.tuning.sensitivity import rank_nodes

        if not self.measured:
            inputs = self.inputs
            log.info("  accuracy-aware INT8: ranking nodes by Dice sensitivity on %d tuning cases",
                     len(self.scorer.case_ids))
            (inputs.work / "sensitivity").mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            all_int8, rows = rank_nodes(inputs.fp32_onnx, self.planner.source, inputs.calib.inputs,
                                        [n["name"] for n in self.planner([])], self.scorer, "quantize-one",
                                        inputs.threads, inputs.work / "sensitivity",
                                        headline_label(inputs.spec.label_names))
            self.measured.update(all_int8=all_int8, rows=rows, seconds=round(time.perf_counter() - t0, 1))
        return self.measured["rows"]

    def report(self) -> dict | None:
        """The manifest's record of the ranking (None when it was not needed)."""
        if not self.measured:
            return None
        return {"measured_on": "ONNX Runtime QDQ, one node quantized at a time", "seconds": self.measured["seconds"],
                "all_int8_delta_points": {k: v * 100 for k, v in self.measured["all_int8"]["delta"].items()},
                "ranking": [{k: r[k] for k in ("name", "op_type", "module", "worst_label_cost", "dice_cost",
                                               "agreement_cost")} for r in self.measured["rows"][:40]]}


def _progress(step: dict) -> None:
    log.info("    %s: ΔDice %s %s", step["step"][:90], _points(step["delta_points"]),
             "over" if step["problems"] else "ok")


def _tune_target(trial: TargetTrial, share: float, settings: AccuracyAwareSettings, planner: _FloatPlanner,
                 ranking: _Ranking, labels: list[str]) -> tuple[dict, dict]:
    """One INT8 target's ``({"float_nodes", "options"}, report)`` within ``share`` seconds: edgeseg's float-plan
    search, and for OpenVINO, when all-INT8 breaks the limits, NNCF's accuracy control too (the better is kept)."""
    nncf_too = trial.profile.target == "openvino"  # half its share is kept for NNCF's own search, if needed
    result = search_float_nodes(trial, planner, ranking, settings.limits, labels, share / 2 if nncf_too else share,
                                progress=_progress)
    plan, options = result.pop("float_nodes"), {}
    control = None
    if nncf_too and result["history"][0]["problems"] and result["seconds"] < share:
        control, result["alternatives"] = _nncf_accuracy_control(trial, planner([]), trial.scorer, settings.limits,
                                                                 labels)
    # own copies: the ranking rows are shared by the targets, the latency costs are this target's
    result["added"] = [{k: n[k] for k in ("name", "op_type", "module", "worst_label_cost")} for n in result["added"]]
    result["latency"] = _precision_costs(trial, planner, result, control)
    result["method"] = "edgeseg-float-plan"
    if control is not None and _prefer_alternative(result):
        _swap_in(result, "nncf-accuracy-control")
        plan, options = planner([]), {"accuracy_control": control}
    return {"float_nodes": plan, "options": options}, result


def tune_float_plans(settings: AccuracyAwareSettings, profiles: list,
                     inputs: TuningInputs) -> tuple[dict[str, dict], dict]:
    """``({profile name: {"float_nodes": plan, "options": build options}}, report for the manifest)`` for every
    INT8 profile in ``profiles``, sharing the time budget between them. The OpenVINO target, when all-INT8 breaks
    the limits, also gets NNCF's ``quantize_with_accuracy_control``; the better of the two is kept (options then
    carry it)."""
    start = time.perf_counter()
    budget = settings.budget_minutes * 60
    scorer = _tuning_scorer(settings, inputs.model, inputs.spec, inputs.calib, inputs.default_data,
                            inputs.eval_dataset, inputs.eval_ids, inputs.seed)
    planner = _FloatPlanner(inputs.fp32_onnx, inputs.plan_options)
    ranking = _Ranking(inputs, planner, scorer)
    plans, targets = {}, {}
    int8 = [p for p in profiles if p.precision == "int8"]
    for i, profile in enumerate(int8):
        left = max(budget - (time.perf_counter() - start), 0)
        trial = TargetTrial(profile, inputs.fp32_onnx, inputs.calib.inputs, tuple(inputs.spec.preprocessing.size),
                            scorer, inputs.threads, inputs.work / profile.name)
        log.info("  accuracy-aware INT8: %s (budget %.1f min)", profile.name, left / 60)
        plans[profile.name], targets[profile.name] = _tune_target(trial, left / (len(int8) - i), settings, planner,
                                                                  ranking, inputs.spec.label_names)
    report = {"limits": settings.limits.to_dict(), "budget_minutes": settings.budget_minutes,
              "tuning": {"dataset": scorer.dataset_name, "split": "train", "cases": scorer.case_ids},
              "sensitivity": ranking.report(), "targets": targets, "seconds": round(time.perf_counter() - start, 1)}
    return plans, report


def _nncf_accuracy_control(trial, preset_plan: list[dict], scorer, limits, labels) -> tuple[object, dict]:
    """Run NNCF's own accuracy-control search on the OpenVINO target and score its model like every trial."""
    from edgeseg.tuning.accuracy_control import NncfAccuracyControl
    from edgeseg.tuning.search import _summary

    control = NncfAccuracyControl(scorer, limits)
    log.info("    NNCF quantize_with_accuracy_control with the same limits …")
    score = trial(preset_plan, {"accuracy_control": control})
    problems = limits.check(score, labels)
    log.info("    NNCF accuracy control: ΔDice %s %s", _points(_summary(score)["delta_points"]),
             "over" if problems else "ok")
    details = trial.last_artifact.details
    return control, {"nncf-accuracy-control": {"met": not problems, "score": _summary(score), "problems": problems,
                                               "slack_points": round(limits.slack(score), 4),
                                               "fake_quantize_ops": details["fake_quantize_ops"],
                                               "seconds": control.seconds}}


def _precision_costs(trial, plan_for, result: dict, control) -> dict:
    """Latency of the chosen plan against the all-INT8 artifact (and NNCF's model, if any), and each float
    node's own cost (the chosen plan with that node quantized again), timed in one run."""
    added = result["added"]
    if not added and control is None:
        return {"speed_retained": 1.0, "note": "no node returned to float: the all-INT8 artifact itself"}
    if (reason := trial.timing_unavailable()) is not None:
        return {"not_measured": f"latency needs the target's runtime ({reason})"}
    variants = {"all-int8": (plan_for([]), None), "chosen": (plan_for(added), None)}
    if control is not None:
        variants["nncf-accuracy-control"] = (plan_for([]), {"accuracy_control": control})
    if len(added) <= 8:
        for n in added:
            variants[f"without {n['name']}"] = (plan_for([m for m in added if m is not n]), None)
    log.info("    timing %d variants (batch 1, own process each)", len(variants))
    p50 = {name: lat.get("p50_ms") for name, lat in trial.latencies(variants).items()}
    for n in added:
        if p50.get(f"without {n['name']}") and p50["chosen"]:
            n["latency_cost_ms"] = round(p50["chosen"] - p50[f"without {n['name']}"], 3)
    out = {"all_int8_p50_ms": p50["all-int8"], "p50_ms": p50["chosen"],
           "speed_retained": round(p50["all-int8"] / p50["chosen"], 3) if p50["all-int8"] and p50["chosen"] else None,
           "note": "batch 1, one run on this machine; per-node costs are within its noise when small"}
    if control is not None:
        result["alternatives"]["nncf-accuracy-control"]["p50_ms"] = p50["nncf-accuracy-control"]
    return out


def _prefer_alternative(result: dict, margin: float = 0.05) -> bool:
    """NNCF's model wins when it meets the limits and edgeseg's plan does not, or both meet and it is faster by
    more than ``margin`` in the same run (smaller differences are timing noise here); neither meeting, when it
    is closer to the limits."""
    other = result["alternatives"]["nncf-accuracy-control"]
    if other["met"] != result["met"]:
        return other["met"]
    if not result["met"]:
        return other["slack_points"] > result["slack_points"]
    mine, theirs = result["latency"].get("p50_ms"), other.get("p50_ms")
    return bool(mine and theirs and theirs < mine * (1 - margin))


def _swap_in(result: dict, method: str) -> None:
    """Make ``method``'s candidate the target's result; edgeseg's own plan moves to the alternatives."""
    keys = ("met", "score", "problems", "slack_points", "added")
    chosen = result["alternatives"].pop(method)
    own = {k: result[k] for k in keys}
    result["alternatives"]["edgeseg-float-plan"] = {**own, "p50_ms": result["latency"].get("p50_ms")}
    result.update({k: chosen.get(k, []) for k in keys}, method=method)
    result["alternatives"][method] = {"fake_quantize_ops": chosen["fake_quantize_ops"], "seconds": chosen["seconds"]}
    lat = result["latency"]
    if chosen.get("p50_ms") and lat.get("all_int8_p50_ms"):
        lat.update(p50_ms=chosen["p50_ms"], speed_retained=round(lat["all_int8_p50_ms"] / chosen["p50_ms"], 3))


def missed_targets(manifest: dict) -> list[str]:
    """Profiles whose accuracy-aware search did not meet the limits."""
    targets = (manifest.get("accuracy_aware") or {}).get("targets", {})
    return [name for name, result in targets.items() if not result["met"]]


def _points(delta_points: dict) -> str:
    """``{"lung": -0.12, …}`` (Dice points) as ``"lung −0.12, … pts"``."""
    return ", ".join(f"{lab} {'−' if d < 0 else '+'}{abs(d):.2f}" for lab, d in delta_points.items()) + " pts"


def accuracy_aware_lines(report: dict) -> list[str]:
    """The search's summary as Rich-markup lines: the tuning cases and limits, then per target: limits met or
    not, the nodes returned to float (with their measured cost), the final drift."""
    from rich.markup import escape

    limits = DiceLimits(report["limits"]["max_dice_drop_points"], report["limits"]["per_label_points"])
    labels = next((list(r["score"]["delta_points"]) for r in report["targets"].values()), list(limits.per_label))
    lines = [f"accuracy-aware INT8 on {len(report['tuning']['cases'])} tuning cases ({report['tuning']['dataset']} "
             f"train), limits {limits.describe(labels)}, {report['seconds']:.0f} s:"]
    for name, result in report["targets"].items():
        state = "[green]met[/]" if result["met"] else "[bold red]missed[/]"
        added = ", ".join(f"{n['module'] or n['name']} ({n['worst_label_cost'] * 100:+.2f} pts"
                          + (f", {n['latency_cost_ms']:+.2f} ms" if "latency_cost_ms" in n else "") + ")"
                          for n in result["added"])
        lat = result.get("latency", {})
        speed = (f"{lat['speed_retained'] * 100:.0f} % of the all-INT8 speed" if lat.get("speed_retained")
                 else lat.get("not_measured", "speed not measured"))
        other = "; ".join(f"{m}: {'met' if a.get('met', True) else 'missed'}"
                          + (f", {a['p50_ms']:.2f} ms" if a.get("p50_ms") else "")
                          for m, a in result.get("alternatives", {}).items() if "score" in a)
        lines.append(f"  {escape(name)}: {state} by {result.get('method', 'edgeseg-float-plan')}; "
                     f"ΔDice {_points(result['score']['delta_points'])}; "
                     f"{len(result['added'])} node(s) back to float{': ' + escape(added) if added else ''}; {speed}; "
                     f"{len(result['history'])} trials, {result['seconds']:.0f} s"
                     + (f"; also tried {other}" if other else "")
                     + (f"; still over: {'; '.join(result['problems'])}" if result["problems"] else ""))
    return lines


def print_accuracy_aware(report: dict) -> None:
    """:func:`accuracy_aware_lines` on stdout (what ``edgeseg compress --max-dice-drop`` shows)."""
    from edgeseg.report import console as out

    for line in accuracy_aware_lines(report):
        out.print(line)
