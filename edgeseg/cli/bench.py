"""Command ``edgeseg bench``: a thin layer over :func:`edgeseg.benchmark.harness.run_bench`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import (
    JsonFlag,
    Split,
    app,
    command_line,
    force_option,
    print_json,
    result_console,
    say,
    split_list,
    user_errors,
    value,
)
from edgeseg.errors import Incomplete, UsageError, VerificationError


@app.command("bench")
@user_errors
def bench_cmd(bundle: Path = typer.Argument(..., help="Bundle directory (from `edgeseg compress`)."),
              data: Path = typer.Option(..., help="Dataset folder (nnU-Net layout); labels optional (agreement only)."),
              split: Split = typer.Option(Split.val, help="val: the checkpoint's held-back cases; test: imagesTs/labelsTs."),
              cases: int = typer.Option(0, min=0, help="Use only the first N cases of the split (0: all)."),
              backends: list[str] = typer.Option([], help="Runtimes to run: torch,onnxruntime,openvino,tensorrt (default all; the FP32 reference always runs)."),
              threads: Optional[int] = typer.Option(None, min=1, help="Threads for every runtime (default: all usable cores); recorded."),
              repeats: int = typer.Option(50, min=1, help="Timed batch-1 runs per artifact (after warm-up), split over the rounds."),
              rounds: int = typer.Option(6, min=1, help="Rounds: each artifact timed in a fresh process per round, artifacts alternating (edgeseg gate needs ≥ 6)."),
              warmup: int = typer.Option(5, min=0, help="Untimed runs before timing, in each process."),
              batch_size: int = typer.Option(8, min=0, help="The larger batch for throughput (0 or 1: batch 1 only)."),
              e2e_cases: int = typer.Option(8, min=0, help="Cases timed end to end (read → preprocess → infer → postprocess → write)."),
              no_latency: bool = typer.Option(False, "--no-latency", help="Accuracy only."),
              load: Optional[str] = typer.Option(None, "--load", help="Also time every artifact with one core kept busy this share of the time, e.g. 0.3,0.6: p50/p99 against idle (a device running other software)."),
              profile: bool = typer.Option(False, "--profile", help="Also time every layer with each runtime's own profiler (OpenVINO performance counters, ONNX Runtime trace): where the time goes, in the JSON and the Markdown."),
              compare_baselines: bool = typer.Option(False, "--compare-baselines", help="Also build and measure what users would pick instead (torch.compile, OpenVINO f32/default, ORT/NNCF INT8 defaults)."),
              baseline_checkpoint: Optional[Path] = typer.Option(None, help="Also measure this checkpoint in PyTorch eager (e.g. the unpruned model)."),
              explain: bool = typer.Option(False, "--explain", help="Also measure explanation drift (occlusion, RISE, Grad-CAM against the FP32 reference, or --baseline-checkpoint) after the timings: the result's explain section, gated by edgeseg gate --max-explanation-drift."),
              explain_cases: int = typer.Option(8, min=1, help="With --explain: the first N cases explained (about 3–7 s per case and artifact for a 2D model on 2 cores)."),
              max_dice_drop: float = typer.Option(0.5, min=0.0, help="Verdict: largest mean Dice drop per label against the FP32 reference, in points (0.01 Dice)."),
              per_label: Optional[str] = typer.Option(None, help="Verdict: per-label limits in points, e.g. lung=0.3,nodule=1.0 (others: --max-dice-drop)."),
              ray: Optional[str] = typer.Option(None, "--ray", help="A device fleet on Ray (pip install 'edgeseg[ray]'): auto, local or a cluster address; one bench per --device-classes class on a node advertising the resource edgeseg-device:<class>; --out is then a folder (<class>.json each). The bundle and data must be at the same paths on every node."),
              device_classes: Optional[str] = typer.Option(None, "--device-classes", help="With --ray: the device classes to bench, e.g. cpu-x86_64-avx2-2t,jetson-orin-nano (the gate's class names)."),
              baseline_dir: Optional[Path] = typer.Option(None, help="With --ray: gate every class's result against <dir>/<class>.json (edgeseg gate's default limits; exit 1 when one fails)."),
              junit: Optional[Path] = typer.Option(None, help="With --ray and --baseline-dir: the fleet gate's JUnit XML (one suite per device class)."),
              out: Path = typer.Option(Path("bench.json"), help="Result JSON; the Markdown (.md) and the plot (.png) go beside it (with --ray: a folder)."),
              json_out: JsonFlag = False,
              force: bool = force_option("Overwrite existing result files.")):
    """Dice drift and latency of every artifact of a bundle (and the FP32 reference) on the same cases.

    Exit codes (with 3 and 4 the results of everything else are still written):
    0 everything asked for was measured;
    2 unusable input, nothing written;
    3 an artifact failed sha256 verification and was not run;
    4 something asked for (an artifact, --baseline-checkpoint, a baseline, a latency) was not measured.
    """
    from edgeseg.benchmark.harness import BenchConfig, run_bench
    from edgeseg.benchmark.load import parse_loads
    from edgeseg.benchmark.report import print_bench_summary, write_reports
    from edgeseg.overwrite import check_overwrite
    from edgeseg.tuning.search import DiceLimits

    if ray is None and (device_classes or baseline_dir or junit):
        raise UsageError("--device-classes, --baseline-dir and --junit are options of a fleet bench: add --ray")
    if ray is None and out.suffix != ".json":
        raise UsageError(f"--out must name a .json file, got {out}")
    cfg = BenchConfig(bundle=bundle, data=data, split=value(split), max_cases=cases or None,
                      backends=split_list(backends), threads=threads, repeats=repeats, rounds=rounds, warmup=warmup,
                      batch_size=batch_size, e2e_cases=e2e_cases, latency=not no_latency,
                      compare_baselines=compare_baselines, baseline_checkpoint=baseline_checkpoint,
                      command=command_line(), limits=DiceLimits.parse(max_dice_drop, per_label).to_dict(),
                      profile=profile, load=parse_loads(load))
    if ray is not None:
        return _fleet(cfg, ray, device_classes, out, baseline_dir, junit, explain_cases if explain else None, force,
                      json_out)
    check_overwrite(out, out.with_suffix(".md"), out.with_suffix(".png"), force=force)
    result = run_bench(cfg)
    if explain:
        from edgeseg.explanation.bench import add_explanation

        add_explanation(result, cfg, explain_cases)
    print_bench_summary(result, result_console(json_out))
    paths = write_reports(result, out)
    if json_out:
        print_json(result)
    say(f"wrote {', '.join(str(p) for p in paths.values())} ({result['seconds']:.0f} s)", json_out)
    refused = [a["name"] for a in result["artifacts"] if a["status"] == "refused"]
    if refused:
        raise VerificationError(f"{len(refused)} artifact(s) failed sha256 verification and were not run: "
                                f"{', '.join(refused)}")
    if result["incomplete"]:
        raise Incomplete(f"{len(result['incomplete'])} asked for but not measured: "
                         + "; ".join(f"{i['name']} ({i['reason'][:120]})" for i in result["incomplete"]))


def _fleet(cfg, address: str, device_classes: Optional[str], out: Path, baseline_dir: Optional[Path],
           junit: Optional[Path], explain_cases: Optional[int], force: bool, json_out: bool) -> None:
    """``bench --ray``: one bench per device class on the fleet, the results in ``out/``, then (with a baseline
    folder) the fleet gate over all of them."""
    import typer

    from edgeseg.cli.app import EXIT_FAILED
    from edgeseg.cli.gate import gate_fleet_results
    from edgeseg.distributed.bench import parse_device_classes, result_paths, run_fleet_bench
    from edgeseg.gating import GateLimits
    from edgeseg.gating.fleet import by_device_class
    from edgeseg.overwrite import check_junit_path, check_overwrite

    classes = parse_device_classes(device_classes)
    if out.suffix == ".json" or out.is_file():
        raise UsageError(f"--ray: --out names the folder of the fleet's results (<class>.json each), got {out}")
    if junit and not baseline_dir:
        raise UsageError("--junit needs --baseline-dir: the JUnit file is the fleet gate's")
    for path in result_paths(out, classes).values():
        check_overwrite(path, path.with_suffix(".md"), path.with_suffix(".png"), force=force)
    if junit:
        check_junit_path(junit)
    written, failed = run_fleet_bench(cfg, address, classes, out, explain_cases)
    for name, path in written.items():
        say(f"{name}: wrote {path}", json_out)
    if baseline_dir is not None:
        from edgeseg.benchmark.schema import read_result

        groups = by_device_class([(path, read_result(path)) for path in written.values()])
        if not gate_fleet_results(groups, baseline_dir, GateLimits(), junit, json_out, failed):
            raise typer.Exit(EXIT_FAILED)
    if failed:
        raise Incomplete(f"{len(failed)} device class(es) not measured: "
                         + "; ".join(f"{name} ({why[:160]})" for name, why in failed.items()))
