"""CLI command ``edgeseg gate``: a thin layer over :mod:`edgeseg.gate`. Exit 0 within limits, 1 when a limit
is broken, 2 on unusable input."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import app, user_errors

EXIT_REGRESSION = 1


@app.command("gate")
@user_errors
def gate_cmd(results: list[Path] = typer.Argument(..., help="One or more `edgeseg bench` results of the same bundle (repeated runs: medians are compared)."),
             baseline: Optional[Path] = typer.Option(None, help="Baseline JSON (from --update-baseline)."),
             baseline_dir: Optional[Path] = typer.Option(None, help="Folder of baselines, one per device class: <dir>/<device-class>.json."),
             max_latency_regression: Optional[str] = typer.Option(None, help="Largest allowed slow-down, e.g. 10% (default 10%)."),
             max_dice_drop: Optional[str] = typer.Option(None, help="Dice points below the baseline allowed: 0.5, or per label lung=0.3,nodule=1.0 (default 0.5)."),
             metric: Optional[str] = typer.Option(None, help="p50 | p90 (default p50)."),
             mode: Optional[str] = typer.Option(None, help="auto | workload | reference | absolute: latency ÷ the fixed workload or ÷ the FP32 reference of the same run, or ms (auto: workload on CPU)."),
             allow_vanished: list[str] = typer.Option([], help="CASE:LABEL glob of a vanished structure to accept (repeatable; '*' accepts all)."),
             allow_device_mismatch: bool = typer.Option(False, "--allow-device-mismatch", help="Compare results from another device class than the baseline's."),
             every_run: bool = typer.Option(False, "--every-run", help="Judge latency in each result on its own; fail only when every run is slower (confirm a regression with a re-run)."),
             limits: Optional[Path] = typer.Option(None, help="TOML file with the limits (options given here override it)."),
             junit: Optional[Path] = typer.Option(None, help="Write the checks as JUnit XML."),
             update_baseline: bool = typer.Option(False, "--update-baseline", help="Write the baseline from RESULTS instead of gating.")):
    """Fail when an artifact got slower or less accurate than the baseline, beyond the limits and the noise."""
    from .bench.schema import read_result
    from .errors import EdgesegError
    from .gate import GateLimits, device_class, make_baseline, read_baseline, run_gate, summarize_runs, write_baseline
    from .gate.check import load_limits_file, parse_dice_limits, parse_fraction
    from .gate.junit import write_junit
    from .gate.report import print_gate

    runs = [read_result(p) for p in results]
    if (baseline is None) == (baseline_dir is None):
        raise EdgesegError("pass exactly one of --baseline FILE and --baseline-dir DIR")
    path = baseline or Path(baseline_dir) / f"{device_class(runs[0])}.json"
    if update_baseline:
        content = make_baseline(runs, [str(p) for p in results])
        write_baseline(content, path)
        typer.echo(f"wrote baseline {path} ({content['device_class']}, {len(runs)} run(s), "
                   f"{len(content['artifacts'])} artifacts)")
        return
    if baseline_dir is not None and not path.is_file():
        raise EdgesegError(f"no baseline for device class {device_class(runs[0])} in {baseline_dir}; create it with "
                           f"--update-baseline")
    settings = load_limits_file(limits) if limits else {}
    if max_latency_regression is not None:
        settings["max_latency_regression"] = parse_fraction(max_latency_regression)
    if max_dice_drop is not None:
        default, per_label = parse_dice_limits(max_dice_drop)
        settings.update(per_label=per_label, **({"max_dice_drop": default} if default is not None else {}))
    settings.update({k: v for k, v in (("metric", metric), ("mode", mode)) if v is not None})
    settings["allow_vanished"] = [*settings.get("allow_vanished", []), *allow_vanished]
    gate_limits = GateLimits(**settings, allow_device_mismatch=allow_device_mismatch, every_run=every_run)
    per_run = [summarize_runs([r]) for r in runs] if every_run else None
    report = run_gate(summarize_runs(runs), read_baseline(path), gate_limits, per_run)
    print_gate(report, path)
    if junit:
        write_junit(report, junit)
    if not report["passed"]:
        raise typer.Exit(EXIT_REGRESSION)
