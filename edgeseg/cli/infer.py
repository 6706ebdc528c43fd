"""Command ``edgeseg infer``: a thin layer over :func:`edgeseg.infer.run_infer`. Imports no torch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import EXIT_FAILED, app, choices, force_option, user_errors, value
from edgeseg.errors import UsageError
from edgeseg.infer.backend import backends

# auto and every registered target that infers, most preferred first: the registry's when the CLI starts, so
# a target a plugin registers is a choice too
Backend = choices("Backend", backends())


@app.command("infer")
@user_errors
def infer_cmd(bundle: Path = typer.Argument(..., help="Bundle directory (verified before any input is read)."),
              inputs: list[Path] = typer.Argument(..., help="PNG/JPEG/TIFF images, NIfTI volumes, DICOM series folders, or folders of these."),
              out: Path = typer.Option(..., "-o", "--out", help="Output folder (label maps in the input's geometry)."),
              backend: Backend = typer.Option("auto", help="auto: TensorRT on NVIDIA, OpenVINO on x86, else ONNX Runtime."),
              artifact: Optional[str] = typer.Option(None, help="Use this artifact of the bundle."),
              probabilities: bool = typer.Option(False, "--probabilities", help="Also write softmax probabilities."),
              end_to_end: bool = typer.Option(True, "--end-to-end/--no-end-to-end", help="uint8 2D images through the artifact's end-to-end graph (pre/post-processing in the graph, one image per call) when it has one; --no-end-to-end: the host path, batched by --batch-size."),
              overlay: bool = typer.Option(False, "--overlay", help="Also write per case a PNG overlay (outlines, legend of the label names) and, for 2D, CASE_colour.png: the label map in colour (a palette PNG)."),
              threads: Optional[int] = typer.Option(None, help="Inference threads (default: the runtime's)."),
              batch_size: int = typer.Option(4, help="2D images per model call."),
              engine_cache: Optional[Path] = typer.Option(None, help="TensorRT: build the engine for this device here on first use, reuse it after (keyed by artifact, device, TensorRT version)."),
              report: Optional[Path] = typer.Option(None, help="Write the run summary (throughput, stage times, failures) as JSON."),
              max_pixels: Optional[int] = typer.Option(None, min=1, help="Refuse a 2D image with more pixels, from its header before decoding (default 2^25 = 33,554,432; memory grows with the pixels)."),
              max_voxels: Optional[int] = typer.Option(None, min=1, help="Refuse a volume with more voxels, from its header before decoding (default 2^27 = 134,217,728)."),
              resume: bool = typer.Option(False, "--resume", help="Skip inputs whose outputs are already complete in OUT (every file in OUT/edgeseg-outputs.jsonl, unchanged, from this bundle and artifact and the input as it is now) and finish the cases a killed run left."),
              ray: Optional[str] = typer.Option(None, "--ray", help="Run on Ray (pip install 'edgeseg[ray]'): auto (RAY_ADDRESS or a cluster started here, else a private one), local, or a cluster address. Inputs, OUT and the bundle must be at the same paths on every node."),
              replicas: int = typer.Option(1, min=1, help="With --ray: model replicas (one Ray actor each, each loading the verified bundle once)."),
              threads_per_replica: Optional[int] = typer.Option(None, min=1, help="With --ray: inference threads (and Ray CPUs) per replica (default 1)."),
              force: bool = force_option("Replace outputs of a previous edgeseg run (listed in OUT/edgeseg-outputs.jsonl and unchanged since) and a previous --report; never any other file.")):
    """Segment images with a compressed bundle, using only its runtime (on a Ray cluster with --ray)."""
    from edgeseg.data.io import atomic_write
    from edgeseg.infer import InferConfig, run_infer
    from edgeseg.infer.outputs import check_report_path

    if batch_size < 1:
        raise UsageError("--batch-size must be ≥ 1")
    if ray is None and (replicas != 1 or threads_per_replica is not None):
        raise UsageError("--replicas and --threads-per-replica need --ray")
    if ray is not None and threads is not None and threads_per_replica is not None:
        raise UsageError("give --threads-per-replica or --threads, not both")
    if report:
        check_report_path(report, force, out)
    limits = {name: v for name, v in (("max_pixels", max_pixels), ("max_voxels", max_voxels)) if v}
    summary = run_infer(InferConfig(bundle=bundle, inputs=inputs, out=out, backend=value(backend), artifact=artifact,
                                    probabilities=probabilities, overlay=overlay, force=force,
                                    threads=threads_per_replica or threads,
                                    end_to_end=end_to_end, resume=resume, ray=ray, replicas=replicas,
                                    batch_size=batch_size, engine_cache=engine_cache, **limits))
    if summary["swept"]:
        typer.echo(f"removed {len(summary['swept'])} temporary file(s) of killed edgeseg runs from {out}: "
                   + ", ".join(Path(p).name for p in summary["swept"]))
    stages = summary["stages_seconds"]
    model = "no image reached the model"
    if summary["model_ms_per_image"] is not None:  # bench's definition: steady state, the first call apart
        first = ("one call, warm-up included" if summary["model_ms_includes_first_call"] else
                 f"median call after the first, which took {summary['model_first_call_ms']:.0f} ms")
        model = f"model {summary['model_ms_per_image']:.1f} ms/image at batch {summary['model_batch']} ({first})"
        if summary["end_to_end_images"]:
            model += f"; {summary['end_to_end_images']} image(s) end to end: pre/post-processing in the graph"
    if summary["skipped"]:
        typer.echo(f"--resume: {len(summary['skipped'])} case(s) already complete in {out}, skipped")
    typer.echo(f"segmented {summary['cases']} case(s) with {summary['artifact']} into {out} in "
               f"{summary['wall_seconds']:.2f} s ({summary['cases_per_second']} cases/s; {model}; "
               f"read+preprocess {stages['read_preprocess']:.2f} s, "
               f"infer {stages['infer']:.2f} s, postprocess+write {stages['postprocess_write']:.2f} s, overlapped)")
    if "ray" in summary:
        typer.echo(ray_line(summary["ray"]))
    if report:
        atomic_write(report, lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    shown = 10  # the rest go to --report
    for failure in summary["failed"][:shown]:
        message = failure["error"]
        if not message.startswith(failure["input"]):
            message = f"{failure['input']}: {message}"
        typer.echo(f"error: {message}", err=True)
    if len(summary["failed"]) > shown:
        where = f"all in {report}" if report else "--report FILE lists all"
        typer.echo(f"… and {len(summary['failed']) - shown} more ({where})", err=True)
    if summary["failed"]:
        typer.echo(f"{len(summary['failed'])} input(s) failed, {summary['cases']} segmented", err=True)
        raise typer.Exit(EXIT_FAILED)


def ray_line(ray: dict) -> str:
    """One line of a Ray run's throughput: in total and per replica, and Ray's overhead per image."""
    per = ", ".join(f"{name} {r['cases']} images at {r['images_per_second']}/s busy" for name, r in
                    ray["per_replica"].items())
    overhead = ray["overhead_seconds_per_image"] or 0.0
    return (f"ray: {ray['images_per_second']} images/s over {ray['replicas_seen']} replica(s) × "
            f"{ray['threads_per_replica']} thread(s) in {ray['pipeline_seconds']:.2f} s ({per}); replica start-up "
            f"{ray['startup_seconds'] or 0:.1f} s, then {overhead * 1e3:.1f} ms/image between batches")
