"""Human-readable summaries of results (Rich tables on the terminal)."""
from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 150)  # results go to stdout; progress to stderr


def _fmt_points(delta: float | None) -> str:
    return "—" if delta is None else f"{delta * 100:+.2f}"


def _headline_label(dice: dict) -> str | None:
    """The label a one-column summary shows: the union of all structures when there are several."""
    return "foreground" if "foreground" in dice else next(iter(dice), None)


def pruning_steps(report: dict) -> str:
    """``lung Dice on 65 cases: before 0.9659 → after pruning 0.0000 → …`` from a pruning report."""
    label = _headline_label(report["dice"]["before"])
    steps = " → ".join(f"{k.replace('_', ' ')} {v[label]['dice']:.4f}" for k, v in report["dice"].items() if v)
    return f"{label} Dice on {report['dice_cases']} cases: {steps}"


def speedup_lines(artifacts: list[dict]) -> list[str]:
    """Each quantized artifact's p50 speed-up over every FP32 artifact of the same runtime and over PyTorch eager."""
    p50 = {a["name"]: a["latency"]["p50_ms"] for a in artifacts if a.get("latency")}
    lines = []
    for a in artifacts:
        if a["precision"] == "fp32" or a["name"] not in p50:
            continue
        refs = [b for b in artifacts if b["precision"] == "fp32" and b["name"] in p50
                and b["runtime"] in (a["runtime"], "torch")]
        ratios = ", ".join(f"{p50[b['name']] / p50[a['name']]:.2f}× {b['name']}" for b in refs)
        base = (artifacts[0].get("baseline") or {}).get("latency", {}).get("p50_ms")
        if base:
            ratios += f", {base / p50[a['name']]:.2f}× {artifacts[0]['baseline']['checkpoint']} (PyTorch eager)"
        lines.append(f"{a['name']} speed-up (p50, batch 1): {ratios}")
    return lines


def print_compress_summary(manifest: dict) -> None:
    """One row per artifact: size, executed precision, Dice, drift in Dice points, agreement, latency."""
    from rich.table import Table

    artifacts = manifest["artifacts"]
    ref_ms = (artifacts[0].get("latency") or {}).get("p50_ms")
    macs, params = manifest["macs"], manifest["params"]
    title = (f"{manifest['source_checkpoint']['name']} · MACs {macs['final'] / 1e9:.2f} G (was {macs['original'] / 1e9:.2f} G) · "
             f"params {params['final'] / 1e6:.2f} M (was {params['original'] / 1e6:.2f} M)")
    if manifest.get("pruning"):
        title += f" · pruned {manifest['pruning'].get('summary', '')}"
    table = Table(title=title)
    for col in ("artifact", "executed", "MB", "Dice", "ΔDice pts per label", "worst case", "agree", "p50 ms", "× torch"):
        table.add_column(col, justify="left" if col in ("artifact", "executed", "worst case", "ΔDice pts per label") else "right")
    for a in artifacts:
        acc = a.get("accuracy") or {}
        drift = acc.get("drift_vs_fp32", {})
        label = _headline_label(acc.get("dice", {}))
        worst_label = min(drift, key=drift.get) if drift else None
        worst = acc["worst_case"][worst_label] if worst_label else None
        lat = (a.get("latency") or {}).get("p50_ms")
        table.add_row(a["name"], str(a.get("executed_precision") or a.get("not_measured") or "")[:38],
                      f"{a['size_bytes'] / 1e6:.2f}",
                      f"{acc['dice'][label]:.4f}" if label else "—",
                      " · ".join(f"{k} {_fmt_points(v)}" for k, v in drift.items()) or "—",
                      f"{worst_label} {worst['case']} {worst['delta'] * 100:+.1f}" if worst else "—",
                      f"{acc['agreement_vs_fp32'][label]:.4f}" if label else "—",
                      f"{lat:.1f}" if lat else ("n/a" if "measured_with" in a else "—"),
                      f"{ref_ms / lat:.2f}" if lat and ref_ms else "—")
    console.print(table)
    for line in speedup_lines(artifacts):
        console.print(line)
    if manifest.get("pruning") and manifest["pruning"].get("dice", {}).get("before"):
        console.print(f"pruning ({manifest['pruning']['summary']}), {pruning_steps(manifest['pruning'])}")
    if acc_label := next((_headline_label(a["accuracy"]["dice"]) for a in artifacts if a.get("accuracy")), None):
        console.print(f"{artifacts[0]['accuracy']['cases']} held-back validation cases. Dice and agreement (Dice of the "
                      f"artifact's masks against the FP32 model's) for '{acc_label}'; ΔDice in points (0.01 Dice) vs the "
                      f"FP32 PyTorch model; worst case = the case with the largest drop.")
    for a in artifacts:
        changed = (a.get("accuracy") or {}).get("structure_changes") or []
        if changed:
            first = changed[0]
            console.print(f"[bold yellow]warning[/]: {a['name']}: a structure of the FP32 masks vanished or appeared in "
                          f"{len(changed)} case/label pair(s), e.g. {first['label']} {first['change']} in {first['case']}")
        for key in ("measured_with", "not_measured"):
            if a.get(key):
                console.print(f"note: {a['name']}: {a[key]}")
        if a.get("details", {}).get("engine_note"):
            console.print(f"note: {a['name']}: {a['details']['engine_note']}")
