"""``edgeseg.bench`` and ``edgeseg.gate`` from Python: a bundle measured on data (:class:`BenchResult`), and bench
results judged against a baseline under latency and Dice limits (:class:`GateReport`)."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.api.bundle import Bundle
from edgeseg.api.options import check_options, dice_limits, names
from edgeseg.errors import InputError, UsageError


@dataclass
class BenchResult:
    """One bench result; ``data`` is its JSON content (schema ``edgeseg-bench``, benchmarks/SCHEMA.md)."""

    data: dict

    @classmethod
    def read(cls, path: str | os.PathLike) -> BenchResult:
        """A result JSON written by ``edgeseg bench`` or :meth:`write` (checked against its schema)."""
        from edgeseg.benchmark.schema import read_result

        return cls(read_result(path))

    @property
    def verdict(self) -> dict:
        """The artifact to ship on this device and why (``lines``), the artifacts that broke a limit, the
        alternatives that beat them."""
        return self.data["verdict"]

    @property
    def artifacts(self) -> list[dict]:
        return self.data["artifacts"]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=1, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        from edgeseg.benchmark.report import markdown_report

        return markdown_report(self.data)

    def plot(self, path: str | os.PathLike) -> Path | None:
        """The latency-against-Dice plot as a PNG at ``path``; None without matplotlib or anything timed."""
        from edgeseg.benchmark.plot import plot_pareto

        return plot_pareto(self.data, path)

    def write(self, path: str | os.PathLike, force: bool = False) -> dict[str, Path]:
        """Write ``path`` (``.json``) and beside it the Markdown (``.md``) and the plot (``.png``), as ``edgeseg bench
        --out`` does; an existing file is replaced only with ``force`` and only if edgeseg wrote it."""
        from edgeseg.benchmark.report import write_reports
        from edgeseg.overwrite import check_overwrite

        path = Path(path)
        if path.suffix != ".json":
            raise UsageError(f"{path}: a bench result is written as .json (the .md and .png go beside it)")
        check_overwrite(path, path.with_suffix(".md"), path.with_suffix(".png"), force=force)
        return write_reports(self.data, path)


def bench(bundle: Bundle | str | os.PathLike, data: str | os.PathLike, *,
          max_dice_drop: float | str | dict | None = None, explain_cases: int = 0, **options: Any) -> BenchResult:
    """Measure every artifact of ``bundle`` and the FP32 reference on the cases of ``data`` (``edgeseg bench``):
    Dice and drift per label, latency, the verdict. Options: the fields of
    :class:`edgeseg.benchmark.harness.BenchConfig` (``split``, ``max_cases``, ``backends``, ``threads``, ``repeats``,
    ``rounds``, ``latency``, ``compare_baselines``, …); ``max_dice_drop`` sets the verdict's limits (points,
    ``"lung=0.3,nodule=1"`` or a dict; default 0.5); ``explain_cases`` > 0 also measures explanation drift on that
    many cases (``bench --explain``: the result's ``explain`` section)."""
    from edgeseg.benchmark.harness import BenchConfig, run_bench
    from edgeseg.benchmark.settings import check_count

    check_options(options, set(BenchConfig.__dataclass_fields__) - {"bundle", "data", "limits"}, "bench()")
    check_count(explain_cases, "explain_cases", 0, "0: no explanations")
    if max_dice_drop is not None:
        options["limits"] = dice_limits(max_dice_drop).to_dict()
    if "backends" in options:
        options["backends"] = names(options["backends"])
    path = bundle.path if isinstance(bundle, Bundle) else bundle
    cfg = BenchConfig(bundle=path, data=data, **options)
    result = run_bench(cfg)
    if explain_cases:
        from edgeseg.explanation.bench import add_explanation

        add_explanation(result, cfg, explain_cases)
    return BenchResult(result)


@dataclass
class GateReport:
    """The gate's decision: ``passed``, one check per artifact, metric and label (``checks``), and ``notes``."""

    report: dict

    @property
    def passed(self) -> bool:
        return self.report["passed"]

    @property
    def checks(self) -> list:
        """:class:`edgeseg.gating.check.Check` records: artifact, check, passed, baseline, current, limit, message."""
        return self.report["checks"]

    @property
    def failed(self) -> list:
        return [c for c in self.checks if not c.passed]

    @property
    def notes(self) -> list[str]:
        return self.report["notes"]

    def to_dict(self) -> dict:
        return {**self.report, "checks": [dataclasses.asdict(c) for c in self.checks]}

    def write_junit(self, path: str | os.PathLike) -> None:
        """The checks as JUnit XML, which CI systems show as test results."""
        from edgeseg.gating.junit import write_junit

        write_junit(self.report, Path(path))


def gate(results, baseline=None, limits=None) -> GateReport:
    """Judge bench ``results`` (one or a list of paths, dicts or :class:`BenchResult`; repeated runs are pooled)
    against ``baseline`` (a baseline file from ``edgeseg gate --update-baseline``, its dict, or bench results to
    make one from) under ``limits`` (a :class:`edgeseg.gating.GateLimits`, a dict of its fields — ``"10%"``,
    ``"lung=0.3"`` and ``max_explanation_drift="iou:0.4"`` forms accepted — or None for the defaults). Explain
    results (paths, dicts, :class:`edgeseg.ExplainResult`) among ``results``, and bench results with an ``explain``
    section, are also judged on explanation drift; explanations alone need no baseline. Unlike ``edgeseg gate`` no
    confirmation run is made: when latency fails, bench again and gate both results with
    ``limits={"every_run": True}``."""
    from edgeseg.gating import gate_runs
    from edgeseg.gating.explanation import explanation_report, gather_explanations, resolve_limits, with_explanations

    runs, explains = _gate_inputs(results)
    gate_limits = _limits(limits)
    docs = gather_explanations(runs, explains)
    explain_limits = resolve_limits(docs, gate_limits.max_explanation_drift)
    if not runs:
        return GateReport(explanation_report(docs, explain_limits, baseline))
    if baseline is None:
        raise UsageError("gate(): bench results are judged against a baseline; pass baseline=")
    report = gate_runs([r for _, r in runs], _baseline(baseline), gate_limits)
    return GateReport(with_explanations(report, docs, explain_limits))


def gate_fleet(results, baseline_dir: str | os.PathLike, limits=None) -> dict[str, GateReport]:
    """Judge bench results of several device classes (a fleet, e.g. from ``edgeseg bench --ray``), each class
    against its own baseline ``<baseline_dir>/<device-class>.json``: a :class:`GateReport` per device class.
    ``results`` and ``limits`` as in :func:`gate` (explanations as bench ``explain`` sections only)."""
    from edgeseg.gating.fleet import by_device_class
    from edgeseg.gating.fleet import gate_fleet as gate_classes

    runs, explains = _gate_inputs(results)
    if explains:
        raise UsageError("gate_fleet(): give explanations as bench results' explain sections, not explain results")
    reports = gate_classes(by_device_class(runs), Path(baseline_dir), _limits(limits))
    return {name: GateReport(report) for name, _, report in reports}


def _gate_inputs(results) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """``results`` split into bench results and explain results, each ``(name, dict)``; a path is read once."""
    runs, explains = [], []
    for i, item in enumerate(results if isinstance(results, (list, tuple)) else [results], 1):
        is_explain, doc = _classify(item)
        (explains if is_explain else runs).append((f"result {i}", doc))
    return runs, explains


def _classify(item) -> tuple[bool, dict]:
    """``(is an explain result, its dict)`` of a path, a dict, an :class:`edgeseg.ExplainResult` or a
    :class:`BenchResult`; a bench result is checked against its schema."""
    from edgeseg.gating.explanation import EXPLAIN_SCHEMA, check_explain, read_gate_input

    if isinstance(item, (str, os.PathLike)):
        kind, doc = read_gate_input(Path(item))
        return kind == EXPLAIN_SCHEMA, doc
    data = getattr(item, "data", item)
    if isinstance(data, dict) and data.get("schema") == EXPLAIN_SCHEMA:
        return True, check_explain(data, "results")
    return False, _result(item)


def _result(result, what: str = "results") -> dict:
    """A bench result's dict from a path, a dict (checked against the schema) or a :class:`BenchResult`; ``what``:
    the argument it was given as, for the error line."""
    from edgeseg.benchmark.schema import read_result, validate_result

    if isinstance(result, BenchResult):
        return result.data
    if isinstance(result, (str, os.PathLike)):
        return read_result(result)
    if not isinstance(result, dict):
        raise UsageError(f"{what}: expected bench result paths, dicts or BenchResults, got {type(result).__name__}")
    if problems := validate_result(result):
        raise InputError(f"{what}: not a valid edgeseg-bench result: {problems[0]}")
    return result


def _baseline(baseline) -> dict:
    from edgeseg.gating import make_baseline, read_baseline
    from edgeseg.gating.baseline import BASELINE_SCHEMA

    if isinstance(baseline, (str, os.PathLike)):
        return read_baseline(Path(baseline))
    if isinstance(baseline, dict) and baseline.get("schema") == BASELINE_SCHEMA:
        return baseline
    what = "baseline (neither a baseline nor bench results to make one from)"
    runs = [_result(r, what) for r in (baseline if isinstance(baseline, (list, tuple)) else [baseline])]
    return make_baseline(runs, [f"result {i}" for i in range(1, len(runs) + 1)])


def _limits(limits):
    from edgeseg.gating import GateLimits
    from edgeseg.gating.check import parse_dice_limits, parse_fraction

    if isinstance(limits, GateLimits):
        return dataclasses.replace(limits)
    settings = dict(limits or {})
    check_options(settings, GateLimits.__dataclass_fields__, "gate() limits")
    if "max_latency_regression" in settings:
        settings["max_latency_regression"] = parse_fraction(settings["max_latency_regression"])
    if isinstance(settings.get("max_dice_drop"), (str, dict)):
        default, per_label = parse_dice_limits(settings.pop("max_dice_drop"))
        settings["per_label"] = {**settings.get("per_label", {}), **per_label}
        if default is not None:
            settings["max_dice_drop"] = default
    return GateLimits(**settings)
