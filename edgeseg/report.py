"""Human-readable summaries of results (Rich tables on the terminal). The ``print_*`` functions are renderers
for the command line (``edgeseg compress``, ``demo``); the library never calls them, it logs."""
from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 150)  # results go to stdout; progress to stderr
_STDOUT = console


def _headline_label(dice: dict) -> str | None:
    """The label a one-column summary shows: the union of all structures when there are several."""
    return "foreground" if "foreground" in dice else next(iter(dice), None)


def pruning_steps(report: dict) -> str:
    """``lung Dice on 65 cases: before 0.9659 → after pruning 0.0000 → …`` from a pruning report."""
    label = _headline_label(report["dice"]["before"])
    steps = " → ".join(f"{k.replace('_', ' ')} {v[label]['dice']:.4f}" for k, v in report["dice"].items() if v)
    return f"{label} Dice on {report['dice_cases']} cases: {steps}"


def compress_verdict(manifest: dict) -> dict:
    """The verdict on a bundle from ``compress``'s own measurements (:func:`edgeseg.benchmark.verdict.decide`: the
    same rules and wording as ``bench``; model-only latency, the limits of ``--max-dice-drop`` when given)."""
    from edgeseg.benchmark.verdict import compress_points, decide

    limits = (manifest.get("accuracy_aware") or {}).get("limits") or {}
    return decide(compress_points(manifest), manifest["artifacts"][0]["name"], limits,
                  checkpoint=manifest["source_checkpoint"]["name"],
                  isa=((manifest.get("device") or {}).get("cpu") or {}).get("isa", []))


def _cases_title(manifest: dict, label: str) -> str:
    """``lung Dice on the first 32 of 65 held-back validation cases of …``: how many, of how many."""
    acc = next((a["accuracy"] for a in manifest["artifacts"] if a.get("accuracy")), None)
    if acc is None:
        return "no evaluation data: Dice not measured"
    n, total = acc["cases"], acc.get("held_back_cases")
    dataset = (manifest.get("evaluation") or {}).get("dataset") or "the evaluation data"
    if total is None:  # a bundle made before the summary said how many there were
        return f"{label} Dice on {n} held-back validation cases of {dataset}"
    if total == n:
        return f"{label} Dice on all {n} held-back validation cases of {dataset}"
    return (f"{label} Dice on the first {n} of {total} held-back validation cases of {dataset} "
            f"(--eval-cases 0: all {total}, as `edgeseg bench --split val` does)")


def compress_summary(manifest: dict) -> list:
    """Rich renderables of ``compress``'s result: heading, accuracy table, speed table, names, notes, verdict."""
    from rich.text import Text

    from edgeseg.benchmark.ratios import format_speedup, signed, speedup
    from edgeseg.benchmark.tables import name_legend, short_names, text_table

    artifacts = manifest["artifacts"]
    names = short_names(a["name"] for a in artifacts)
    reference = artifacts[0]
    macs, params = manifest["macs"], manifest["params"]
    heading = (f"{manifest['source_checkpoint']['name']} · MACs {_count(macs['final'], 1e9, 'G')} (was "
               f"{_count(macs['original'], 1e9, 'G')}) · params {_count(params['final'], 1e6, 'M')} (was "
               f"{_count(params['original'], 1e6, 'M')})")
    if manifest.get("pruning"):
        heading += f" · pruned {manifest['pruning'].get('summary', '')}"
    label = next((_headline_label(a["accuracy"]["dice"]) for a in artifacts if a.get("accuracy")), None)
    accuracy, speed = [], []
    base = reference.get("baseline")
    for a in artifacts:
        acc = a.get("accuracy") or {}
        drift = acc.get("drift_vs_fp32") or {}
        worst_label = min(drift, key=drift.get) if drift else None
        worst = acc["worst_case"][worst_label] if worst_label else None
        accuracy.append([names[a["name"]], f"{acc['dice'][label]:.4f}" if acc else "—",
                         " · ".join(f"{k} {signed(v * 100, 2)}" for k, v in drift.items()) or "—",
                         f"{worst_label} {worst['case']} {signed(worst['delta'] * 100, 1)}" if worst else "—",
                         f"{acc['agreement_vs_fp32'][label]:.4f}" if acc else "—"])
        lat = a.get("latency")
        executed = str(a.get("executed_precision") or "—").split(" (")[0]
        row = [names[a["name"]], executed, f"{a['size_bytes'] / 1e6:.2f}",
               f"{lat['p50_ms']:.1f}" if lat else ("n/a" if "measured_with" in a else "—"),
               format_speedup(speedup(reference.get("latency"), lat))]
        if base:
            row.append(format_speedup(speedup(base.get("latency"), lat)))
        speed.append(row)
    speed_headers = ["artifact", "executed", "MB", "model p50 ms", f"× {names[reference['name']]}"]
    speed_headers += [f"× {base['checkpoint']} (eager)"] if base else []
    out = [Text(heading, style="bold"),
           text_table(_cases_title(manifest, label) if label else "no evaluation data: Dice not measured",
                      ["artifact", "Dice", "ΔDice pts per label", "worst case", "agree"], accuracy),
           text_table("speed (batch 1, each artifact in its own process; × = that p50 / this p50, in brackets the "
                      "min–max over rounds, ! rounds disagree beyond the noise)", speed_headers, speed, text_columns=2)]
    out += [Text(f"  {line}", style="dim") for line in name_legend(names)]
    out += [Text(line) for line in _notes(manifest)]
    out.append(Text("verdict", style="bold"))
    out += [Text(f"  {line}") for line in compress_verdict(manifest)["lines"]]
    return out


def _notes(manifest: dict) -> list[str]:
    """Pruning steps, structures that vanished, artifacts measured another way or not at all."""
    lines = []
    if manifest.get("pruning") and manifest["pruning"].get("dice", {}).get("before"):
        lines.append(f"pruning ({manifest['pruning']['summary']}), {pruning_steps(manifest['pruning'])}")
    for a in manifest["artifacts"]:
        changed = (a.get("accuracy") or {}).get("structure_changes") or []
        if changed:
            first = changed[0]
            lines.append(f"warning: {a['name']}: a structure of the FP32 masks vanished or appeared in "
                         f"{len(changed)} case/label pair(s), e.g. {first['label']} {first['change']} in {first['case']}")
        lines += [f"note: {a['name']}: {a[key]}" for key in ("measured_with", "not_measured") if a.get(key)]
        if a.get("details", {}).get("engine_note"):
            lines.append(f"note: {a['name']}: {a['details']['engine_note']}")
    return lines


def print_compress_summary(manifest: dict, console: Console | None = None) -> None:
    """:func:`compress_summary` on ``console`` (default: stdout's)."""
    for item in compress_summary(manifest):
        (console or _STDOUT).print(item)


def _count(value, scale: float, unit: str) -> str:
    return "n/a" if value is None else f"{value / scale:.2f} {unit}"
