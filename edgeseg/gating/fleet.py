"""The gate over a fleet: bench results of several device classes, each gated against its own baseline in
``--baseline-dir`` (``<dir>/<device-class>.json``), one JUnit file with one test suite per class. What
``edgeseg gate --baseline-dir`` does with results of more than one class, and ``edgeseg bench --ray`` after
gathering its results."""
from __future__ import annotations

from pathlib import Path

from edgeseg.errors import InputError
from edgeseg.gating.baseline import device_class, read_baseline
from edgeseg.gating.check import GateLimits, gate_runs
from edgeseg.gating.explanation import gather_explanations, resolve_limits, with_explanations


def by_device_class(bench: list[tuple[Path, dict]]) -> dict[str, list[tuple[Path, dict]]]:
    """Bench results ``(path, doc)`` grouped by their device class, in the order first seen."""
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for path, doc in bench:
        groups.setdefault(device_class(doc), []).append((path, doc))
    return groups


def gate_fleet(groups: dict[str, list[tuple[Path, dict]]], baseline_dir: Path,
               limits: GateLimits) -> list[tuple[str, Path, dict]]:
    """``(device class, baseline path, report)`` per class; a class without a baseline is unusable input (every
    baseline is checked before any class is gated). Latency is not confirmed by a second run here: a node of the
    fleet is not this machine."""
    baselines = {name: Path(baseline_dir) / f"{name}.json" for name in groups}
    if missing := [name for name, path in baselines.items() if not path.is_file()]:
        raise InputError(f"no baseline for device class(es) {', '.join(missing)} in {baseline_dir}; create them with "
                         "edgeseg gate --update-baseline --baseline-dir")
    reports = []
    for name, members in groups.items():
        explained = gather_explanations(members, [])
        report = gate_runs([doc for _, doc in members], read_baseline(baselines[name]), limits)
        if explained or limits.max_explanation_drift is not None:
            report = with_explanations(report, explained, resolve_limits(explained, limits.max_explanation_drift))
        report["notes"].append("a fleet: latency over a limit is not confirmed by a second run here (the node is "
                               "not this machine); re-run the fleet bench and gate both with --every-run")
        reports.append((name, baselines[name], report))
    return reports
