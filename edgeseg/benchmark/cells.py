"""The cells and facts every view of a bench result shows — the Markdown report, the terminal summary and the
plot — read from the result with every accessor taking nulls."""
from __future__ import annotations

import math

from edgeseg.benchmark.ratios import format_speedup, signed, stored_speedup
from edgeseg.benchmark.verdict import bench_verdict

DASH = "—"
STATUS_NOTES = {"accuracy_only": "accuracy only", "not_measured": "not measured", "refused": "refused: sha256"}


def headline(result: dict) -> str:
    """The label the one-number columns show (``settings.headline_label``)."""
    return result["settings"]["headline_label"]


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def _ms(value: float | None) -> str:
    """Milliseconds with about three significant digits."""
    return DASH if value is None else f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}"


def _points_ci(drift: dict | None) -> str:
    """A Dice delta (fraction) in points with its interval: ``−0.05 [−0.09, −0.01]``, or ``n/a (1 case)``
    where there is none."""
    if not drift or drift.get("mean") is None:
        return DASH
    text = signed(drift["mean"] * 100, 2)
    if drift.get("low") is not None and drift.get("high") is not None:
        text += f" [{signed(drift['low'] * 100, 2)}, {signed(drift['high'] * 100, 2)}]"
    elif drift.get("n") is not None:
        text += f" n/a ({drift['n']} case{'' if drift['n'] == 1 else 's'})"
    return text


def _per_label(artifact: dict, key: str, label: str):
    """``accuracy[key][label]`` or None (``key``: mean, drift, agreement, worst_case); every accessor takes nulls."""
    return ((artifact.get("accuracy") or {}).get(key) or {}).get(label)


def _metric(artifact: dict, label: str, metric: str) -> float | None:
    return (_per_label(artifact, "mean", label) or {}).get(metric)


def _model_p50(artifact: dict) -> float | None:
    return ((artifact.get("latency") or {}).get("batch_1") or {}).get("p50_ms")


def _e2e_p50(artifact: dict) -> float | None:
    return (artifact.get("end_to_end") or {}).get("p50_ms")


def _changes(artifact: dict) -> list[dict]:
    return (artifact.get("accuracy") or {}).get("structure_changes") or []


def _main_cells(result: dict, artifact: dict) -> dict[str, str]:
    """Every main-table cell of one artifact, keyed by column; Markdown and the terminal pick from these."""
    label, latency = headline(result), artifact.get("latency") or {}
    is_reference = artifact["name"] == result["reference"]
    worst = _per_label(artifact, "worst_case", label)
    changes = _changes(artifact)
    vanished = sum(c["change"] == "vanished" for c in changes)
    status = STATUS_NOTES.get(artifact["status"])
    largest = latency.get(f"batch_{max(result['settings']['batch_sizes'])}") or {}
    return {
        "artifact": artifact["name"] + (f" ({status})" if status else ""),
        "role": artifact["role"],
        "executed": artifact.get("executed_precision") or DASH,
        "mb": _num(None if artifact.get("size_bytes") is None else artifact["size_bytes"] / 1e6, ".2f"),
        "dice": _num(_metric(artifact, label, "dice"), ".4f"),
        "delta": "reference" if is_reference else _points_ci(_per_label(artifact, "drift", label)),
        "agree": _num(_per_label(artifact, "agreement", label), ".4f"),
        "worst": DASH if not worst or is_reference else f"{worst['case']} {signed(worst['delta'] * 100, 1)}",
        "changes": f"{vanished}/{len(changes) - vanished}" if artifact.get("accuracy") else DASH,
        "hd95": _num(_metric(artifact, label, "hd95"), ".2f"),
        "p50": _ms(_model_p50(artifact)),
        "x_ref": format_speedup(stored_speedup(artifact, "model")),
        "throughput": _num(largest.get("throughput_per_s"), ".1f"),
        "e2e": _ms(_e2e_p50(artifact)),
        "e2e_x_ref": format_speedup(stored_speedup(artifact, "e2e")),
        "cold": _num(latency.get("cold_start_s"), ".2f"),
        "rss": _num(latency.get("peak_rss_mb"), ".0f"),
    }


def _warnings(result: dict) -> list[tuple[str, str]]:
    """(kind, text) for everything a reader must not miss."""
    overlap = result["data"].get("calibration_overlap") or []
    found = [("warning", f"{len(overlap)} evaluation case(s) were in the calibration set: {', '.join(overlap[:5])}")
             ] if overlap else []
    found += [("warning", f"bundle verification: {p}") for p in result["bundle"]["verification"]["problems"]]
    for a in result["artifacts"]:
        if changes := _changes(a):
            first = changes[0]
            found.append(("warning", f"{a['name']}: a structure of the reference masks vanished or appeared in "
                                     f"{len(changes)} case/label pair(s), e.g. {first['label']} {first['change']} "
                                     f"in {first['case']}"))
        if a["status"] in ("refused", "not_measured"):
            reason = "; ".join(a.get("notes") or []) or STATUS_NOTES[a["status"]]
            found.append((a["status"].replace("_", " "), f"{a['name']}: {reason}"))
    return found


def _threads(result: dict) -> str:
    threads = result["settings"].get("threads") or result["device"].get("threads")
    return f"{threads or 'runtime-default'} threads"


def verdict_of(result: dict) -> dict:
    """The result's verdict; for a result written before verdicts, worked out with the default limits."""
    return result.get("verdict") or bench_verdict(result)


def data_line(result: dict) -> str:
    data = result["data"]
    labelled = "" if data["labelled"] else " (no labels: agreement only)"
    return f"{data['dataset']}, split {data['split']}, {len(data['cases'])} cases{labelled}"


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the (name, latency, dice) points no other point beats on both (lower latency, higher Dice),
    by increasing latency. Points with a missing or non-finite value are ignored."""
    clean = [(n, x, y) for n, x, y in points
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    return [n for n, x, y in sorted(clean, key=lambda p: (p[1], -p[2]))
            if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for _, x2, y2 in clean)]
