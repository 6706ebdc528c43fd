"""``compress --max-dice-drop``: one float plan per INT8 target that keeps the Dice drop within the limits.

The nodes are ranked once by their Dice sensitivity (ONNX Runtime QDQ, quantized one at a time, on the tuning
cases); then each target's search grows its float plan along that ranking, checking every trial on the
target's own artifact (:mod:`edgeseg.tuning.search`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..data.nnunet import NnUNetDataset
from ..errors import EdgesegError
from ..evaluate import check_compatible
from ..metrics import headline_label
from ..progress import console
from .scorer import TuningScorer, tuning_cases
from .search import DiceLimits, TargetTrial, search_float_nodes


@dataclass
class AccuracyAwareSettings:
    limits: DiceLimits
    tune_data: Path | None = None     # labelled dataset; default: the calibration dataset's training cases
    tune_cases: int = 16
    budget_minutes: float = 10.0
    allow_miss: bool = False


def _tuning_scorer(settings, model, spec, calib, default_data: Path | None, eval_dataset, eval_ids, seed: int):
    from ..calibration import check_disjoint
    from ..inference import torch_predictor

    root = settings.tune_data or default_data
    if root is None:
        raise EdgesegError("--max-dice-drop needs labelled tuning cases: pass --tune-data DIR (its training "
                           "cases minus the calibration cases are used)")
    dataset = NnUNetDataset(root)
    check_compatible(spec, dataset)
    same_as_calib = calib.manifest.get("dataset") == dataset.name
    ids = tuning_cases(spec, dataset, calib.case_ids if same_as_calib else [], "train", settings.tune_cases, seed)
    if eval_dataset is not None and eval_dataset.name == dataset.name and set(ids) & set(eval_ids):
        raise EdgesegError(f"tuning cases overlap the {len(set(ids) & set(eval_ids))} evaluated cases; "
                           "pass --tune-data with other cases")
    check_disjoint(calib, ids, dataset.name)
    return TuningScorer(torch_predictor(model), spec, dataset, ids)


def tune_float_plans(settings: AccuracyAwareSettings, model, spec, fp32_onnx: Path, calib, profiles,
                     plan_options: dict, default_data: Path | None, eval_dataset, eval_ids: list[str],
                     threads: int | None, work: Path, seed: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """``({profile name: float plan}, report for the manifest)`` for every INT8 profile in ``profiles``."""
    import onnx

    from ..targets.float_nodes import plan_float_nodes
    from .sensitivity import rank_nodes

    start = time.perf_counter()
    budget = settings.budget_minutes * 60
    scorer = _tuning_scorer(settings, model, spec, calib, default_data, eval_dataset, eval_ids, seed)
    labels, headline = spec.label_names, headline_label(spec.label_names)
    source = onnx.load(str(fp32_onnx))

    def plan_for(added: list[dict]) -> list[dict]:
        reasons = {n["name"]: f"accuracy-aware: quantized alone it cost {n['worst_label_cost'] * 100:.2f} Dice pts "
                              f"on the tuning cases" for n in added}
        plan = plan_float_nodes(source, plan_options["preset"], [*plan_options["keep_float"], *reasons],
                                plan_options["quantize"])
        for entry in plan:
            entry["reason"] = reasons.get(entry["name"], entry["reason"])
        return plan

    sensitivity: dict = {}

    def ranking() -> list[dict]:  # measured once, and only when some target needs it
        if not sensitivity:
            console.print(f"  accuracy-aware INT8: ranking nodes by Dice sensitivity on {len(scorer.case_ids)} "
                          "tuning cases")
            (work / "sensitivity").mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            all_int8, rows = rank_nodes(fp32_onnx, source, calib.inputs, [n["name"] for n in plan_for([])], scorer,
                                        "quantize-one", threads, work / "sensitivity", headline)
            sensitivity.update(all_int8=all_int8, rows=rows, seconds=round(time.perf_counter() - t0, 1))
        return sensitivity["rows"]

    plans, targets = {}, {}
    int8 = [p for p in profiles if p.precision == "int8"]
    for i, profile in enumerate(int8):
        left = budget - (time.perf_counter() - start)
        trial = TargetTrial(profile, fp32_onnx, calib.inputs, tuple(spec.preprocessing.size), scorer, threads,
                            work / profile.name)
        console.print(f"  accuracy-aware INT8: {profile.name} (budget {max(left, 0) / 60:.1f} min)")
        result = search_float_nodes(trial, plan_for, ranking, settings.limits, labels, max(left, 0) / (len(int8) - i),
                                    progress=lambda h: console.print(f"    {h['step'][:90]}: {h['delta_points']} "
                                                                     f"{'ok' if not h['problems'] else 'over'}"))
        plans[profile.name] = result.pop("float_nodes")
        result["added"] = [{k: n[k] for k in ("name", "op_type", "module", "worst_label_cost")} for n in result["added"]]
        targets[profile.name] = result
    report = {"limits": settings.limits.to_dict(), "budget_minutes": settings.budget_minutes,
              "tuning": {"dataset": scorer.dataset_name, "split": "train", "cases": scorer.case_ids},
              "sensitivity": {"measured_on": "ONNX Runtime QDQ, one node quantized at a time",
                              "seconds": sensitivity["seconds"],
                              "all_int8_delta_points": {k: v * 100 for k, v in sensitivity["all_int8"]["delta"].items()},
                              "ranking": [{k: r[k] for k in ("name", "op_type", "module", "worst_label_cost",
                                                             "dice_cost", "agreement_cost")}
                                          for r in sensitivity["rows"][:40]]} if sensitivity else None,
              "targets": targets, "seconds": round(time.perf_counter() - start, 1)}
    return plans, report


def missed_targets(manifest: dict) -> list[str]:
    """Profiles whose accuracy-aware search did not meet the limits."""
    targets = (manifest.get("accuracy_aware") or {}).get("targets", {})
    return [name for name, result in targets.items() if not result["met"]]


def print_accuracy_aware(report: dict) -> None:
    """Per target: limits met or not, the nodes returned to float (with their measured cost), the final drift."""
    from rich.markup import escape

    from ..report import console as out

    out.print(f"accuracy-aware INT8 on {len(report['tuning']['cases'])} tuning cases ({report['tuning']['dataset']} "
              f"train), limits {report['limits']}, {report['seconds']:.0f} s:")
    for name, result in report["targets"].items():
        state = "[green]met[/]" if result["met"] else "[bold red]missed[/]"
        added = ", ".join(f"{n['module'] or n['name']} ({n['worst_label_cost'] * 100:+.2f})" for n in result["added"])
        out.print(f"  {escape(name)}: {state}; ΔDice pts {result['score']['delta_points']}; "
                  f"{len(result['added'])} node(s) back to float{': ' + escape(added) if added else ''}; "
                  f"{len(result['history'])} trials, {result['seconds']:.0f} s"
                  + (f"; still over: {'; '.join(result['problems'])}" if result["problems"] else ""))
