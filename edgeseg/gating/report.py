"""The gate's summary for the command line: one row per check, failures first (a CLI renderer: the library
never prints; :func:`gate_document` is the same report as JSON, what ``edgeseg gate --json`` prints)."""
from __future__ import annotations

from pathlib import Path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def gate_document(report: dict, baseline_path: Path | None) -> dict:
    """The report of :func:`edgeseg.gating.gate_runs` as a JSON-ready dict (checks as dicts, the baseline's path)."""
    import dataclasses

    return {"schema": "edgeseg-gate", "baseline": None if baseline_path is None else str(baseline_path), **report,
            "checks": [dataclasses.asdict(c) for c in report["checks"]]}


def print_gate(report: dict, baseline_path: Path | None, console=None) -> None:
    """The table, the name legend, the notes and the decision on ``console`` (default: stdout's)."""
    from rich.markup import escape
    from rich.table import Table

    from edgeseg.benchmark.tables import name_legend, short_names
    from edgeseg.report import console as stdout

    console = console or stdout

    names = short_names(c.artifact for c in report["checks"])  # short and unique: nothing cut in a narrow log
    title = (f"edgeseg gate · explanation drift ({report['metric']}) against each FP32 reference · {report['runs']} "
             "result(s)" if baseline_path is None else
             f"edgeseg gate vs {escape(str(baseline_path))} · {report['device_class']} · latency {report['metric']} "
             f"({report['mode']}) · {report['runs']} run(s) vs {report['baseline_runs']}")
    table = Table(title=title)
    for column in ("", "artifact", "check", "baseline", "current", "limit", "why"):
        table.add_column(column, overflow="fold")
    for c in sorted(report["checks"], key=lambda c: c.passed):
        table.add_row("[yellow]info[/]" if c.advisory else "[green]ok[/]" if c.passed else "[bold red]FAIL[/]", escape(names[c.artifact]), escape(c.check),
                      _fmt(c.baseline), _fmt(c.current), escape(c.limit), escape(c.message))
    console.print(table)
    for line in name_legend(names):
        console.print(f"  {escape(line)}")
    for note in report["notes"]:
        console.print(f"note: {escape(note)}")
    failed = [c for c in report["checks"] if not c.passed]
    judged = [c for c in report["checks"] if not c.advisory]
    shown = f" ({len(report['checks']) - len(judged)} latency checks shown, not judged)" if len(judged) < len(report["checks"]) else ""
    console.print(f"[bold red]gate failed[/]: {len(failed)} of {len(judged)} checks broke a limit{shown}"
                  if failed else f"[green]gate passed[/]: {len(judged)} checks within limits{shown}")
