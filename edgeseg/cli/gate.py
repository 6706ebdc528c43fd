"""Command ``edgeseg gate``: a thin layer over :mod:`edgeseg.gating`. Exit 0 within limits, 1 when a limit is
broken, 2 on unusable input."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import (
    EXIT_FAILED,
    GateMode,
    JsonFlag,
    Metric,
    app,
    print_json,
    result_console,
    say,
    user_errors,
    value,
)
from edgeseg.errors import InputError, UsageError


@app.command("gate")
@user_errors
def gate_cmd(results: list[Path] = typer.Argument(..., help="`edgeseg bench` results of one bundle (repeated runs: medians are compared) and/or `edgeseg explain` results (explanation drift: alone, they need no baseline)."),
             baseline: Optional[Path] = typer.Option(None, help="Baseline JSON (from --update-baseline)."),
             baseline_dir: Optional[Path] = typer.Option(None, help="Folder of baselines, one per device class: <dir>/<device-class>.json."),
             max_latency_regression: Optional[str] = typer.Option(None, help="Largest allowed slow-down, e.g. 10% (default 10%)."),
             max_dice_drop: Optional[str] = typer.Option(None, help="Dice points below the baseline allowed: 0.5, or per label lung=0.3,nodule=1.0 (default 0.5)."),
             metric: Optional[Metric] = typer.Option(None, help="Latency percentile (default p50)."),
             mode: Optional[GateMode] = typer.Option(None, help="Latency ÷ the fixed workload, ÷ the FP32 reference or ÷ the FP32 artifact on the same runtime, all of the same run, or ms (absolute). Default auto: on CPU ÷ workload and ÷ runtime_fp32, either can fail."),
             allow_vanished: list[str] = typer.Option([], help="CASE:LABEL glob of a vanished structure to accept (repeatable; '*' accepts all)."),
             allow_device_mismatch: bool = typer.Option(False, "--allow-device-mismatch", help="Compare results from another device class than the baseline's."),
             every_run: bool = typer.Option(False, "--every-run", help="Several results of one bundle: latency fails when the runs pooled are slower beyond the limit and the noise band and each run on its own is slower than half the limit (how a re-run confirms a regression)."),
             max_explanation_drift: Optional[str] = typer.Option(None, help="Largest explanation drift per label against the FP32 reference, from explain results or bench --explain: 1 − mean ρ of the headline map (default), or iou: 1 − mean top-10 % IoU; e.g. 0.1, iou:0.4, rank:0.05,lung=0.1; attention=0.2 also gates each attention gate's coefficients (default 0.1 on ρ whenever explanations are given; gates reported only)."),
             limits: Optional[Path] = typer.Option(None, help="TOML file with the limits (options given here override it)."),
             junit: Optional[Path] = typer.Option(None, help="Write the checks as JUnit XML."),
             confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="When only latency is over its limit (beyond the noise band, or within a wide one), bench the bundle once more (settings of the first result, written beside it as NAME.confirm.json) and decide on both runs as --every-run does."),
             update_baseline: bool = typer.Option(False, "--update-baseline", help="Write the baseline from RESULTS instead of gating."),
             replace_baseline: bool = typer.Option(False, "--replace-baseline", help="With --update-baseline: replace a baseline of another model or data (never a file that is not a baseline)."),
             json_out: JsonFlag = False):
    """Fail when an artifact got slower or less accurate than the baseline, beyond the limits and the noise.

    Exit codes:
    0 every check holds;
    1 a limit is broken (latency: confirmed by the second run: pooled beyond the band, each run over half the limit);
    2 unusable input: unreadable, damaged or oversized (> 64 MB) results or baseline, other-class results, other cases, latency from fewer than 6 rounds, nothing to gate, a baseline write over another model's baseline or over a file that is not one;
    64 a limit that means nothing (NaN, infinite, negative).
    """
    from edgeseg.gating import gate_runs, read_baseline
    from edgeseg.gating.explanation import (
        EXPLAIN_SCHEMA,
        explanation_report,
        gather_explanations,
        read_gate_input,
        resolve_limits,
        with_explanations,
    )
    from edgeseg.gating.fleet import by_device_class
    from edgeseg.gating.junit import write_junit
    from edgeseg.gating.report import gate_document, print_gate
    from edgeseg.overwrite import check_junit_path

    if junit:  # rewritten on every CI run: replaced only when edgeseg wrote it
        check_junit_path(junit)
    inputs = [(p, *read_gate_input(p)) for p in results]
    bench = [(p, doc) for p, kind, doc in inputs if kind != EXPLAIN_SCHEMA]
    runs = [doc for _, doc in bench]
    groups = by_device_class(bench) if baseline_dir is not None and baseline is None else {}
    if update_baseline:
        if len(runs) < len(inputs):
            raise UsageError("--update-baseline takes bench results only (an explanation is gated against "
                             "--max-explanation-drift, not a baseline)")
        for members in groups.values() if len(groups) > 1 else [bench]:  # a fleet: one baseline per device class
            group = [doc for _, doc in members]
            _update_baseline(group, [p for p, _ in members], _baseline_path(group, baseline, baseline_dir),
                             replace_baseline, json_out)
        return
    gate_limits = _gate_limits(limits, max_latency_regression, max_dice_drop, value(metric), value(mode),
                               allow_vanished, allow_device_mismatch, every_run, max_explanation_drift)
    if len(groups) > 1:
        if len(bench) < len(inputs):
            raise UsageError("results of several device classes: give explanations as bench --explain sections, "
                             "not separate explain results")
        if not gate_fleet_results(groups, baseline_dir, gate_limits, junit, json_out):
            raise typer.Exit(EXIT_FAILED)
        return
    explained = gather_explanations(bench, [(p, doc) for p, kind, doc in inputs if kind == EXPLAIN_SCHEMA])
    explain_limits = resolve_limits(explained, gate_limits.max_explanation_drift)
    if not runs:  # explanations alone: judged against the FP32 reference, no baseline
        path, report = None, explanation_report(explained, explain_limits, baseline or baseline_dir)
    else:
        path = _baseline_path(runs, baseline, baseline_dir)
        if baseline_dir is not None and not path.is_file():
            raise InputError(f"no baseline for device class {path.stem} in {baseline_dir}; create it with "
                             "--update-baseline")
        base = read_baseline(path)
        report = with_explanations(gate_runs(runs, base, gate_limits), explained, explain_limits)
        failed = [c for c in report["checks"] if not c.passed]
        undecided = [c for c in report["checks"] if c.undecided(gate_limits.max_latency_regression)]
        # a latency limit broken, or over the limit but inside a wide noise band: a second run decides (pooled)
        if confirm and (failed or undecided) and all(c.check.startswith("latency") for c in failed) \
                and not (every_run and len(runs) > 1):
            extra, note = _confirmation_run(results[0], runs[0], json_out)
            if extra is not None:
                gate_limits.every_run = True
                report = with_explanations(gate_runs([*runs, extra], base, gate_limits), explained, explain_limits)
            report["notes"].append(note)
    print_gate(report, path, result_console(json_out))
    if json_out:
        print_json(gate_document(report, path))
    if junit:
        write_junit(report, junit)
    if not report["passed"]:
        raise typer.Exit(EXIT_FAILED)


def gate_fleet_results(groups: dict, baseline_dir: Path, limits, junit: Optional[Path], json_out: bool = False,
                       errors: Optional[dict] = None) -> bool:
    """Gate results of several device classes, each against ``<baseline_dir>/<class>.json``; print each class's
    table, write one JUnit file (a suite per class; ``errors``: classes that measured nothing, each an ``<error>``)
    and return whether every class gated passed."""
    from edgeseg.gating.fleet import gate_fleet
    from edgeseg.gating.junit import write_junit
    from edgeseg.gating.report import gate_document, print_gate

    reports = gate_fleet(groups, baseline_dir, limits)
    console = result_console(json_out)
    for name, path, report in reports:
        print_gate(report, path, console)
    if json_out:
        print_json({"schema": "edgeseg-gate-fleet", "passed": all(r["passed"] for _, _, r in reports) and not errors,
                    "device_classes": {name: gate_document(report, path) for name, path, report in reports},
                    "not_measured": errors or {}})
    if junit:
        write_junit([(name, report) for name, _, report in reports], junit, errors)
    for name, why in (errors or {}).items():
        say(f"error: {name}: nothing measured: {why}", json_out)
    passed = all(report["passed"] for _, _, report in reports)  # a class not measured is the caller's exit code
    say(f"fleet gate {'passed' if passed else 'failed'}: {len(reports)} device class(es) gated"
        + (f", {len(errors)} not measured" if errors else ""), json_out)
    return passed


def _baseline_path(runs: list[dict], baseline: Optional[Path], baseline_dir: Optional[Path]) -> Path:
    """The baseline file: ``--baseline``, or the results' device class in ``--baseline-dir``."""
    from edgeseg.gating import device_class

    if (baseline is None) == (baseline_dir is None):
        raise UsageError("pass exactly one of --baseline FILE and --baseline-dir DIR")
    return baseline or Path(baseline_dir) / f"{device_class(runs[0])}.json"


def _gate_limits(limits: Optional[Path], max_latency_regression: Optional[str], max_dice_drop: Optional[str],
                 metric: Optional[str], mode: Optional[str], allow_vanished: list[str], allow_device_mismatch: bool,
                 every_run: bool, max_explanation_drift: Optional[str] = None):
    """The :class:`edgeseg.gating.GateLimits` of the limits file, overridden by the options given."""
    from edgeseg.gating import GateLimits
    from edgeseg.gating.check import load_limits_file, parse_dice_limits, parse_fraction

    settings = load_limits_file(limits) if limits else {}
    if max_latency_regression is not None:
        settings["max_latency_regression"] = parse_fraction(max_latency_regression)
    if max_dice_drop is not None:
        default, per_label = parse_dice_limits(max_dice_drop)
        settings.update(per_label=per_label, **({"max_dice_drop": default} if default is not None else {}))
    settings.update({k: v for k, v in (("metric", metric), ("mode", mode),
                                       ("max_explanation_drift", max_explanation_drift)) if v is not None})
    settings["allow_vanished"] = [*settings.get("allow_vanished", []), *allow_vanished]
    return GateLimits(**settings, allow_device_mismatch=allow_device_mismatch, every_run=every_run)


def _update_baseline(runs: list[dict], results: list[Path], path: Path, replace: bool, json_out: bool) -> None:
    """``--update-baseline``: write the baseline of ``runs`` at ``path`` and say what it replaced."""
    from edgeseg.gating import describe_baseline, make_baseline, write_baseline
    from edgeseg.gating.check import ASSUMED_RUN_SIGMA, Z

    content = make_baseline(runs, [str(p) for p in results])
    old = write_baseline(content, path, replace_other=replace)
    if json_out:
        print_json(content)
    say(f"wrote baseline {path} ({content['device_class']}, {len(runs)} run(s), "
        f"{len(content['artifacts'])} artifacts)", json_out)
    if old is not None:
        say(f"replaced {path}: {describe_baseline(old)} → {describe_baseline(content)}", json_out)
    if len(runs) == 1:
        say(f"note: a baseline from one run has no measured run-to-run noise; the gate assumes σ "
            f"{ASSUMED_RUN_SIGMA:.0%} between runs (a noise band ≥ {Z * ASSUMED_RUN_SIGMA * 2 ** 0.5:.0%} "
            "against one run); write it from 3 bench results to measure it", json_out)


def _confirmation_run(first: Path, result: dict, json_out: bool = False) -> tuple[dict | None, str]:
    """Bench the bundle of ``result`` again with its recorded settings (latency of batch 1 only), write the
    result beside ``first`` as ``<name>.confirm.json``; ``(result, note)``, or ``(None, why not)``."""
    from edgeseg.benchmark.harness import BenchConfig, run_bench
    from edgeseg.benchmark.schema import read_result
    from edgeseg.bundle import MANIFEST
    from edgeseg.data.io import atomic_write
    from edgeseg.overwrite import check_replace, json_schema_is
    from edgeseg.util import file_sha256

    bundle, data, s = Path(result["bundle"]["path"]), Path(result["data"]["root"]), result["settings"]
    if not (bundle / MANIFEST).is_file() or not data.is_dir():
        return None, (f"latency not confirmed: the bundle {bundle} or the data {data} of {first} is not here; bench "
                      "again and gate both results with --every-run")
    if file_sha256(bundle / MANIFEST) != result["bundle"]["manifest_sha256"]:
        return None, f"latency not confirmed: the bundle {bundle} changed since {first} was measured"
    out = first.with_name(f"{first.stem}.confirm.json")
    check_replace(out, True, json_schema_is("edgeseg-bench", "exists and is not an edgeseg bench result; not replaced "
                                            "(the confirmation run writes there)"))
    say(f"gate: latency over its limit in {first} (beyond or within the noise band); deciding with a second "
        f"bench run of {bundle} → {out}", json_out)
    cfg = BenchConfig(bundle=bundle, data=data, split=result["data"]["split"], max_cases=len(result["data"]["cases"]),
                      backends=[] if s["backends"] == ["all"] else s["backends"], threads=s["threads"],
                      repeats=s["repeats"], rounds=s["rounds"], warmup=s["warmup"], batch_size=0, e2e_cases=0,
                      command=f"edgeseg gate (confirmation run of {first})")
    text = json.dumps(run_bench(cfg), indent=1, allow_nan=False) + "\n"
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return read_result(out), (f"a latency limit broke in {first}; re-measured by a second bench run ({out}): "
                              "latency fails where both runs pooled are slower beyond the limit and the noise band, and each run "
                              "on its own slower than half the limit")
