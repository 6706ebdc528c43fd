"""Command ``edgeseg explain``: a thin layer over :func:`edgeseg.explanation.run_explain`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import JsonFlag, Split, app, force_option, print_json, say, split_list, user_errors, value
from edgeseg.errors import VerificationError


@app.command("explain")
@user_errors
def explain_cmd(bundle: Path = typer.Argument(..., help="Bundle directory (verified before anything runs)."),
                data: Path = typer.Option(..., help="Dataset folder (nnU-Net layout); labels give calibration and Dice drift."),
                split: Split = typer.Option(Split.val, help="val: the checkpoint's held-back cases; test: imagesTs/labelsTs."),
                cases: int = typer.Option(32, min=1, help="Explain the first N cases of the split."),
                labels: list[str] = typer.Option([], help="Labels to report, comma-separated or repeated (default: every foreground label)."),
                artifacts: list[str] = typer.Option([], help="Artifacts to explain (default: every one that runs here with its own runtime)."),
                baseline_checkpoint: Optional[Path] = typer.Option(None, help="The reference instead of the bundle's FP32 model, e.g. the model before pruning."),
                threads: int = typer.Option(2, min=1, help="Threads for every runtime."),
                rise_masks: int = typer.Option(128, min=8, help="RISE random masks per case."),
                occlusion_grid: int = typer.Option(8, min=2, help="Occlusion patches per axis."),
                seed: int = typer.Option(0, help="Seed of the RISE masks (the same masks for every model)."),
                samples_per_volume: int = typer.Option(4, min=1, help="A volume: explain its N slices (2D model) or windows (3D) with the most foreground the reference predicts."),
                gradcam_plus_plus: bool = typer.Option(False, "--gradcam-plus-plus", help="Also Grad-CAM++ maps of the PyTorch models (the same backward pass; their deletion/insertion curves add forward passes)."),
                out: Path = typer.Option(Path("explain"), help="Output folder: explain.json, explain.md, explain_<artifact>.png, calibration.png."),
                json_out: JsonFlag = False,
                force: bool = force_option("Replace the files of an earlier explain run in --out (never any other file).")):
    """Explanation drift: does each artifact still look where the FP32 model looked (occlusion, RISE, Grad-CAM)?

    Exit codes: 0 explained; 2 unusable input, nothing written; 3 an artifact failed sha256 verification (not
    explained; the others are written)."""
    from edgeseg.bundle import manifest_artifacts, read_manifest
    from edgeseg.explanation import ExplainConfig, MapSettings, run_explain
    from edgeseg.explanation.report import check_outputs, write_outputs

    chosen = split_list(artifacts)
    names = chosen or [a.name for a in manifest_artifacts(read_manifest(bundle))]
    check_outputs(out, names, force)  # before the work: never replace what edgeseg did not write
    settings = MapSettings(occlusion_grid=occlusion_grid, rise_masks=rise_masks, seed=seed)
    outcome = run_explain(ExplainConfig(bundle=bundle, data=data, split=value(split), cases=cases,
                                        labels=split_list(labels), artifacts=chosen,
                                        baseline_checkpoint=baseline_checkpoint, threads=threads, settings=settings,
                                        samples_per_volume=samples_per_volume, gradcam_plus_plus=gradcam_plus_plus))
    paths = write_outputs(outcome, out, force)
    if json_out:
        print_json(outcome.result)
    say(f"{outcome.result['verdict']}\nwrote {', '.join(str(p) for p in paths.values())} "
        f"({outcome.result['seconds']:.0f} s)", json_out)
    refused = [n for n, why in outcome.result["not_explained"].items() if why.startswith("sha256 verification failed")]
    if refused:  # like bench: the others were explained and written, the exit code says what was not
        raise VerificationError(f"{len(refused)} artifact(s) failed sha256 verification and were not explained: "
                                f"{', '.join(refused)}")
