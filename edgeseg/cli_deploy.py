"""CLI commands of the deployment path: calibrate, compress, verify, build-engine, profiles."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import app, user_errors
from .errors import EdgesegError
from .overwrite import check_overwrite


def _split_list(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _parse_sizes(text: Optional[str]) -> Optional[list[tuple[int, ...]]]:
    if not text:
        return None
    try:
        return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise EdgesegError(f"--sizes expects e.g. 256x256,512x512, got {text!r}") from None


@app.command("calibrate")
@user_errors
def calibrate_cmd(data: Optional[Path] = typer.Argument(None, help="Dataset folder (nnU-Net layout); or use --recipe."),
                  checkpoint: Path = typer.Option(..., help="Checkpoint whose preprocessing the inputs get."),
                  out: Path = typer.Option(..., help="Calibration set to write (.npz)."),
                  recipe: Optional[str] = typer.Option(None, help="Recipe name in calibration/ (or a .toml path)."),
                  size: int = typer.Option(64, help="Number of samples (images or slices)."),
                  strategy: str = typer.Option("stratified", help="stratified (by foreground fraction) | random"),
                  split: str = typer.Option("train", help="Split to draw from; never the one you evaluate on."),
                  sizes: Optional[str] = typer.Option(None, help="Spatial sizes to calibrate at, e.g. 256x256,512x512 (default: the model's)."),
                  seed: int = typer.Option(0),
                  force: bool = typer.Option(False, help="Overwrite an existing file.")):
    """Build a calibration set: real cases, chosen by a recorded strategy, preprocessed as the model expects."""
    from .calibration import build_calibration_set, load_recipe, save_calibration
    from .checkpoint import read_spec

    check_overwrite(out, force=force)
    options = {"size": size, "strategy": strategy, "split": split, "seed": seed, "sizes": _parse_sizes(sizes)}
    if recipe:
        loaded = load_recipe(recipe)
        data = data or loaded.pop("dataset")
        options.update({k: v for k, v in loaded.items() if k in options})
    if data is None:
        raise EdgesegError("pass a dataset folder or --recipe NAME")
    spec = read_spec(checkpoint)
    calib = build_calibration_set(data, spec.preprocessing, spec.spatial_dims, options["size"], options["strategy"],
                                  options["seed"], options["split"], sizes=options["sizes"])
    save_calibration(out, calib)
    fractions = [s["foreground_fraction"] for s in calib.manifest["samples"]]
    typer.echo(f"wrote {out}: {calib.manifest['size']} samples from {len(calib.case_ids)} {options['split']} cases "
               f"({options['strategy']}; empty {sum(f == 0 for f in fractions)}, foreground fraction median "
               f"{sorted(fractions)[len(fractions) // 2]:.3f})")


@app.command("compress")
@user_errors
def compress_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt)."),
                 out: Path = typer.Option(..., help="Bundle directory to create."),
                 int8: bool = typer.Option(False, "--int8", help="INT8 (same as --precision int8)."),
                 precision: str = typer.Option("int8", help="int8 | fp16 (GPU targets) | fp32"),
                 calib: Optional[Path] = typer.Option(None, help="Calibration data: dataset folder or `edgeseg calibrate` .npz."),
                 calib_from_checkpoint: bool = typer.Option(False, help="Calibrate on the training cases the checkpoint records."),
                 calib_size: int = typer.Option(64, help="Calibration samples."),
                 calib_strategy: str = typer.Option("stratified", help="stratified | random"),
                 calib_method: Optional[str] = typer.Option(None, help="ONNX Runtime/TensorRT calibration: minmax | entropy | percentile."),
                 targets: list[str] = typer.Option(["onnx,openvino,tensorrt"], help="Runtimes (each with its default profile)."),
                 target_profile: list[str] = typer.Option([], help="Target profile name or .toml (repeatable; replaces --targets)."),
                 prune: Optional[float] = typer.Option(None, help="Structured channel pruning ratio, e.g. 0.3."),
                 prune_macs: Optional[float] = typer.Option(None, help="Prune to this share of the original MACs, e.g. 0.5."),
                 finetune_epochs: int = typer.Option(0, help="Recovery fine-tune epochs after pruning."),
                 finetune_minutes: Optional[float] = typer.Option(None, help="Time limit of the recovery fine-tune."),
                 keep_float: list[str] = typer.Option([], help="Also keep these nodes float: name/op/module glob or @group (repeatable)."),
                 quantize: list[str] = typer.Option([], help="Quantize these preset nodes after all (glob or @group)."),
                 no_preset: bool = typer.Option(False, "--no-preset", help="Drop the fragile-ops preset (quantize LayerNorm, Softmax, ...)."),
                 eval_data: Optional[Path] = typer.Option(None, help="Dataset for the drift check (default: the calibration dataset)."),
                 eval_cases: int = typer.Option(32, help="Held-back validation cases for the drift check (0: all)."),
                 baseline_checkpoint: Optional[Path] = typer.Option(None, help="Also time this checkpoint in PyTorch eager, for speed-ups over it (default with --prune: the input)."),
                 threads: Optional[int] = typer.Option(None, help="Threads for latency, the same for every artifact (default: every usable core, as bench)."),
                 latency_repeats: int = typer.Option(30, help="Timed batch-1 runs per artifact (each artifact in its own process)."),
                 max_dice_drop: Optional[float] = typer.Option(None, help="Accuracy-aware INT8: largest mean Dice drop per label, in points, on the tuning cases; sensitive nodes go back to float until it holds."),
                 per_label: Optional[str] = typer.Option(None, help="Per-label limits in points, e.g. lung=0.3,nodule=1.0 (others: --max-dice-drop)."),
                 tune_data: Optional[Path] = typer.Option(None, help="Labelled dataset for tuning (its training cases minus the calibration cases; default: the --calib dataset)."),
                 tune_cases: int = typer.Option(16, help="Tuning cases."),
                 budget_minutes: float = typer.Option(10.0, help="Time budget of the accuracy-aware search."),
                 allow_miss: bool = typer.Option(False, help="Exit 0 even when a target cannot meet the Dice limits (the best plan found is kept)."),
                 force: bool = typer.Option(False, help="Replace an existing bundle.")):
    """Prune → calibrate → INT8/FP16 per target → verified bundle; prints size, MACs, Dice drift and latency."""
    from .compress import CompressConfig, compress
    from .report import print_compress_summary

    precision = "int8" if int8 else precision
    tuning = None
    if max_dice_drop is not None or per_label:
        from .tuning.accuracy_aware import AccuracyAwareSettings
        from .tuning.search import DiceLimits

        if precision != "int8":
            raise EdgesegError("--max-dice-drop tunes INT8 artifacts; use it with --int8")
        tuning = AccuracyAwareSettings(DiceLimits.parse(max_dice_drop if max_dice_drop is not None else 0.5, per_label),
                                       tune_data, tune_cases, budget_minutes, allow_miss)
    cfg = CompressConfig(checkpoint=checkpoint, out=out, precision=precision, targets=_split_list(targets),
                         profiles=_split_list(target_profile), calib=calib, calib_from_checkpoint=calib_from_checkpoint,
                         calib_size=calib_size, calib_strategy=calib_strategy, calib_method=calib_method,
                         eval_data=eval_data, eval_cases=eval_cases or None, prune=prune, prune_macs=prune_macs,
                         finetune_epochs=finetune_epochs, finetune_minutes=finetune_minutes, keep_float=keep_float,
                         quantize_ops=quantize, preset=not no_preset, baseline_checkpoint=baseline_checkpoint, threads=threads,
                         latency_repeats=latency_repeats, force=force, accuracy_aware=tuning)
    manifest = compress(cfg)
    print_compress_summary(manifest)
    typer.echo(f"wrote {out} ({len(manifest['artifacts'])} artifacts, {manifest['compress_seconds']:.0f} s)")
    if tuning is not None:
        from .tuning.accuracy_aware import missed_targets, print_accuracy_aware

        print_accuracy_aware(manifest["accuracy_aware"])
        missed = missed_targets(manifest)
        if missed and not allow_miss:
            typer.echo(f"error: the Dice limits could not be met for {', '.join(missed)} within the budget; the best "
                       "plan found is in the bundle (pass --allow-miss to accept it)", err=True)
            raise typer.Exit(4)


@app.command("prune")
@user_errors
def prune_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt)."),
              data: Path = typer.Option(..., help="Dataset folder: training images for statistics and recovery, val for Dice."),
              out: Path = typer.Option(..., help="Pruned checkpoint to write (.ckpt)."),
              ratio: Optional[float] = typer.Option(None, help="Share of channels removed from every prunable group, e.g. 0.5."),
              macs: Optional[float] = typer.Option(None, help="Or: the share of the MACs to keep, e.g. 0.5."),
              finetune_epochs: int = typer.Option(0, help="Recovery fine-tune epochs."),
              finetune_minutes: Optional[float] = typer.Option(None, help="Time limit of the fine-tune."),
              calib_images: int = typer.Option(32, help="Training images for channel statistics and BatchNorm."),
              force: bool = typer.Option(False, help="Overwrite an existing file.")):
    """Structured pruning (channels, attention heads) + BatchNorm re-estimation + optional recovery → a pruned checkpoint."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .prune.pipeline import PruneSettings, prune_on_dataset
    from .report import pruning_steps

    check_overwrite(out, force=force)
    if (ratio is None) == (macs is None):
        raise EdgesegError("pass exactly one of --ratio and --macs")
    model, spec = load_checkpoint(checkpoint)
    report = prune_on_dataset(model, spec, PruneSettings(ratio, macs, finetune_epochs, finetune_minutes, calib_images),
                              data)
    save_checkpoint(out, model, spec)
    typer.echo(f"{report['summary']}; MACs {report['macs_before'] / 1e9:.2f} G → {report['macs_after'] / 1e9:.2f} G, "
               f"params {report['params_before'] / 1e6:.2f} M → {report['params_after'] / 1e6:.2f} M")
    typer.echo(pruning_steps(report))
    typer.echo(f"saved {out}")


@app.command("verify")
@user_errors
def verify_cmd(bundle: Path = typer.Argument(..., help="Bundle directory."),
               expect_digest: Optional[str] = typer.Option(None, help="Refuse unless the manifest digest is this "
                                                                      "(sha256 obtained out of band, e.g. from the release).")):
    """Check a bundle the way every loader does (docs/bundle.md): the manifest's schema and its own digest,
    every listed file (inside the bundle, regular, sha256), self-contained ONNX, embedded preprocessing and
    labels equal to the manifest's. Exit 1 on a failed file, 2 on an unusable manifest."""
    from .bundle import read_manifest, unlisted_files, verify_bundle

    manifest = read_manifest(bundle, expect_digest)
    problems = verify_bundle(bundle)
    for p in problems:
        typer.echo(f"FAIL {p}", err=True)
    if problems:
        raise typer.Exit(1)
    n = sum(len(a["hashes"]) for a in manifest["artifacts"]) + len(manifest.get("extra_hashes", {}))
    typer.echo(f"OK {bundle}: {n} files in {len(manifest['artifacts'])} artifacts match their sha256; "
               f"manifest digest sha256:{manifest['manifest_sha256']}")
    unlisted = unlisted_files(bundle, manifest, "manifest.json")
    if unlisted:
        typer.echo(f"note: {len(unlisted)} file(s) in the folder are not part of the bundle and never read "
                   f"(e.g. {unlisted[0]})")


@app.command("build-engine")
@user_errors
def build_engine_cmd(bundle: Path = typer.Argument(..., help="Bundle directory."),
                     artifact: Optional[str] = typer.Option(None, help="Only this TensorRT artifact.")):
    """Build TensorRT engines for this GPU from the bundle's TensorRT ONNX (run it on the deployment device)."""
    from .targets.tensorrt_backend import build_bundle_engines

    for name, path in build_bundle_engines(bundle, artifact):
        typer.echo(f"built {name}: {path}")


@app.command("prepare-engine")
@user_errors
def prepare_engine_cmd(bundle: Path = typer.Argument(..., help="Bundle directory (verified first)."),
                       cache: Path = typer.Option(..., help="Engine cache folder (e.g. a volume that outlives the container)."),
                       artifact: Optional[str] = typer.Option(None, help="The TensorRT artifact (default: the bundle's first).")):
    """Build (first start) or reuse the TensorRT engine for this device in CACHE; prints its path."""
    from .bundle import load_bundle
    from .targets.tensorrt_backend import tensorrt_artifacts
    from .targets.trt_engine_cache import ensure_engine

    engine, built = ensure_engine(bundle, tensorrt_artifacts(load_bundle(bundle), bundle, artifact)[0], cache)
    typer.echo(f"{'built' if built else 'reused'} {engine}")


@app.command("profiles")
@user_errors
def profiles_cmd():
    """List the target profiles (``export/*.toml``)."""
    from .targets import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        typer.echo(f"{name:28s} {p.target:12s} {p.precision:5s} {p.description}")
