"""Commands that make what is deployed: ``calibrate``, ``compress``, ``prune``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseg.cli.app import CalibMethod, Precision, Split, Strategy, app, force_option, split_list, user_errors, value
from edgeseg.errors import Incomplete, UsageError


def _parse_sizes(text: Optional[str]) -> Optional[list[tuple[int, ...]]]:
    if not text:
        return None
    try:
        return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sizes expects e.g. 256x256,512x512, got {text!r}") from None


@app.command("calibrate")
@user_errors
def calibrate_cmd(data: Optional[Path] = typer.Argument(None, help="Dataset folder (nnU-Net layout); or use --recipe."),
                  checkpoint: Path = typer.Option(..., help="Checkpoint whose preprocessing the inputs get."),
                  out: Path = typer.Option(..., help="Calibration set to write (.npz)."),
                  recipe: Optional[str] = typer.Option(None, help="Recipe name in calibration/ (or a .toml path)."),
                  size: int = typer.Option(64, help="Number of samples (images or slices)."),
                  strategy: Strategy = typer.Option(Strategy.stratified, help="stratified: by foreground fraction."),
                  split: Split = typer.Option(Split.train, help="Split to draw from; never the one you evaluate on."),
                  sizes: Optional[str] = typer.Option(None, help="Spatial sizes to calibrate at, e.g. 256x256,512x512 (default: the model's)."),
                  seed: int = typer.Option(0),
                  force: bool = force_option("Overwrite an existing file.")):
    """Build a calibration set: real cases, chosen by a recorded strategy, preprocessed as the model expects."""
    from edgeseg.calibration import build_calibration_set, load_recipe, save_calibration
    from edgeseg.checkpoint import read_spec
    from edgeseg.overwrite import check_overwrite

    check_overwrite(out, force=force)
    options = {"size": size, "strategy": value(strategy), "split": value(split), "seed": seed,
               "sizes": _parse_sizes(sizes)}
    if recipe:
        loaded = load_recipe(recipe)
        data = data or loaded.pop("dataset")
        options.update({k: v for k, v in loaded.items() if k in options})
    if data is None:
        raise UsageError("pass a dataset folder or --recipe NAME")
    spec = read_spec(checkpoint)
    calib = build_calibration_set(data, spec.preprocessing, spec.spatial_dims, options["size"], options["strategy"],
                                  options["seed"], options["split"], sizes=options["sizes"])
    save_calibration(out, calib)
    fractions = [s["foreground_fraction"] for s in calib.manifest["samples"]]
    typer.echo(f"wrote {out}: {calib.manifest['size']} samples from {len(calib.case_ids)} {options['split']} cases "
               f"({options['strategy']}; empty {sum(f == 0 for f in fractions)}, foreground fraction median "
               f"{sorted(fractions)[len(fractions) // 2]:.3f})")


# compress's options, by group (each group is a panel of `edgeseg compress --help`)
_OUTPUT, _CALIB, _PRUNE, _NODES, _MEASURE, _TUNE = ("Output and targets", "Calibration", "Pruning", "INT8 nodes",
                                                    "Drift and latency", "Accuracy-aware INT8")


def _option(*decls, panel: str, help: str):
    return typer.Option(*decls, help=help, rich_help_panel=panel)


Int8 = Annotated[bool, _option("--int8", panel=_OUTPUT, help="INT8 (same as --precision int8).")]
PrecisionOpt = Annotated[Precision, _option(panel=_OUTPUT, help="fp16: GPU targets.")]
Targets = Annotated[list[str], _option(panel=_OUTPUT, help="Runtimes (each with its default profile), comma-separated or repeated.")]
TargetProfile = Annotated[list[str], _option(panel=_OUTPUT, help="Target profile name or .toml (repeatable; replaces --targets).")]
Calib = Annotated[Optional[Path], _option(panel=_CALIB, help="Calibration data: dataset folder or `edgeseg calibrate` .npz.")]
CalibFromCheckpoint = Annotated[bool, _option("--calib-from-checkpoint", panel=_CALIB, help="Calibrate on the training cases the checkpoint records.")]
CalibSize = Annotated[int, _option(panel=_CALIB, help="Calibration samples.")]
CalibStrategy = Annotated[Strategy, _option(panel=_CALIB, help="stratified: by foreground fraction.")]
CalibMethodOpt = Annotated[Optional[CalibMethod], _option(panel=_CALIB, help="ONNX Runtime/TensorRT calibration method.")]
PruneRatio = Annotated[Optional[float], _option(panel=_PRUNE, help="Structured channel pruning ratio, e.g. 0.3.")]
PruneMacs = Annotated[Optional[float], _option(panel=_PRUNE, help="Prune to this share of the original MACs, e.g. 0.5.")]
FinetuneEpochs = Annotated[int, _option(panel=_PRUNE, help="Recovery fine-tune epochs after pruning.")]
FinetuneMinutes = Annotated[Optional[float], _option(panel=_PRUNE, help="Time limit of the recovery fine-tune.")]
Align = Annotated[Optional[int], _option(panel=_PRUNE, help="Round pruned widths to multiples of this, e.g. 16 (the output channels an INT8 kernel takes at once: cheaper per MAC, more MACs kept; default: off).")]
KeepFloat = Annotated[list[str], _option(panel=_NODES, help="Also keep these nodes float: name/op/module glob or @group (repeatable).")]
Quantize = Annotated[list[str], _option(panel=_NODES, help="Quantize these preset nodes after all (glob or @group).")]
NoPreset = Annotated[bool, _option("--no-preset", panel=_NODES, help="Drop the fragile-ops preset (quantize LayerNorm, Softmax, ...).")]
EvalData = Annotated[Optional[Path], _option(panel=_MEASURE, help="Dataset for the drift check (default: the calibration dataset).")]
EvalCases = Annotated[int, _option(panel=_MEASURE, help="Held-back validation cases for the drift check (0: all).")]
BaselineCheckpoint = Annotated[Optional[Path], _option(panel=_MEASURE, help="Also time this checkpoint in PyTorch eager, for speed-ups over it (default with --prune: the input).")]
Threads = Annotated[Optional[int], _option(panel=_MEASURE, help="Threads for latency, the same for every artifact (default: every usable core, as bench).")]
LatencyRepeats = Annotated[int, _option(panel=_MEASURE, help="Timed batch-1 runs per artifact (each artifact in its own process).")]
MaxDiceDrop = Annotated[Optional[float], _option(panel=_TUNE, help="Largest mean Dice drop per label, in points, on the tuning cases; sensitive nodes go back to float until it holds.")]
PerLabel = Annotated[Optional[str], _option(panel=_TUNE, help="Per-label limits in points, e.g. lung=0.3,nodule=1.0 (others: --max-dice-drop).")]
TuneData = Annotated[Optional[Path], _option(panel=_TUNE, help="Labelled dataset for tuning (its training cases minus the calibration cases; default: the --calib dataset).")]
TuneCases = Annotated[int, _option(panel=_TUNE, help="Tuning cases.")]
BudgetMinutes = Annotated[float, _option(panel=_TUNE, help="Time budget of the accuracy-aware search.")]
AllowMiss = Annotated[bool, _option("--allow-miss", panel=_TUNE, help="Exit 0 even when a target cannot meet the Dice limits (the best plan found is kept).")]


@app.command("compress")
@user_errors
def compress_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt); a MONAI bundle or smp folder (imported first: see `edgeseg import`); or an FP32 .onnx with --spec."),
                 spec_file: Optional[Path] = typer.Option(None, "--spec", help="For an ONNX model without edgeseg metadata, a TorchScript or an ExportedProgram: its labels and preprocessing (TOML or JSON, docs/import.md).", rich_help_panel=_OUTPUT),
                 trust_code: bool = typer.Option(False, "--trust-code", help="Load a TorchScript / ExportedProgram file: loading one runs the code its author put in it.", rich_help_panel=_OUTPUT),
                 out: Path = typer.Option(..., help="Bundle directory to create.", rich_help_panel=_OUTPUT),
                 int8: Int8 = False, precision: PrecisionOpt = Precision.int8,
                 targets: Targets = ["onnx,openvino,tensorrt"], target_profile: TargetProfile = [],
                 calib: Calib = None, calib_from_checkpoint: CalibFromCheckpoint = False, calib_size: CalibSize = 64,
                 calib_strategy: CalibStrategy = Strategy.stratified, calib_method: CalibMethodOpt = None,
                 prune: PruneRatio = None, prune_macs: PruneMacs = None, finetune_epochs: FinetuneEpochs = 0,
                 finetune_minutes: FinetuneMinutes = None, align: Align = None,
                 keep_float: KeepFloat = [], quantize: Quantize = [], no_preset: NoPreset = False,
                 eval_data: EvalData = None, eval_cases: EvalCases = 32, baseline_checkpoint: BaselineCheckpoint = None,
                 threads: Threads = None, latency_repeats: LatencyRepeats = 30,
                 max_dice_drop: MaxDiceDrop = None, per_label: PerLabel = None, tune_data: TuneData = None,
                 tune_cases: TuneCases = 16, budget_minutes: BudgetMinutes = 10.0, allow_miss: AllowMiss = False,
                 force: bool = typer.Option(False, "--force", help="Replace an existing bundle.", rich_help_panel=_OUTPUT)):
    """Prune → calibrate → INT8/FP16 per target → verified bundle; prints size, MACs, Dice drift and latency."""
    cfg = compress_config(**locals())
    from edgeseg.compression.onnx_source import is_onnx

    if not is_onnx(checkpoint):
        import torch  # noqa: F401  (the full install: on the runtime-only one, say so before reading anything)

    from edgeseg.compression.pipeline import compress
    from edgeseg.report import print_compress_summary

    manifest = compress(cfg)
    print_compress_summary(manifest)
    typer.echo(f"wrote {out} ({len(manifest['artifacts'])} artifacts, {manifest['compress_seconds']:.0f} s)")
    if cfg.accuracy_aware is not None:
        from edgeseg.tuning.accuracy_aware import missed_targets, print_accuracy_aware

        print_accuracy_aware(manifest["accuracy_aware"])
        missed = missed_targets(manifest)
        if missed and not allow_miss:
            raise Incomplete(f"the Dice limits could not be met for {', '.join(missed)} within the budget; the best "
                             "plan found is in the bundle (pass --allow-miss to accept it)")


def compress_config(*, checkpoint, out, int8, precision, targets, target_profile, no_preset, quantize, max_dice_drop,
                    per_label, tune_data, tune_cases, budget_minutes, allow_miss, eval_cases, calib_strategy,
                    calib_method, **same):
    """The :class:`edgeseg.compression.pipeline.CompressConfig` of ``compress``'s options (``same``: fields of the same name)."""
    from edgeseg.compression.pipeline import CompressConfig

    precision = "int8" if int8 else value(precision)
    tuning = None
    if max_dice_drop is not None or per_label:
        from edgeseg.tuning.accuracy_aware import AccuracyAwareSettings
        from edgeseg.tuning.search import DiceLimits

        if precision != "int8":
            raise UsageError("--max-dice-drop tunes INT8 artifacts; use it with --int8")
        tuning = AccuracyAwareSettings(DiceLimits.parse(max_dice_drop if max_dice_drop is not None else 0.5, per_label),
                                       tune_data, tune_cases, budget_minutes, allow_miss)
    return CompressConfig(checkpoint=checkpoint, out=out, precision=precision, targets=split_list(targets),
                          profiles=split_list(target_profile), calib_strategy=value(calib_strategy),
                          calib_method=value(calib_method), eval_cases=eval_cases or None, quantize_ops=quantize,
                          preset=not no_preset, accuracy_aware=tuning, **same)


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
              align: int = typer.Option(0, min=0, help="Round kept widths to multiples of this (16 for a model headed for INT8; 0: off)."),
              force: bool = force_option("Overwrite an existing file.")):
    """Structured pruning (channels, attention heads) + BatchNorm re-estimation + optional recovery → a pruned checkpoint."""
    from edgeseg.checkpoint import load_checkpoint, save_checkpoint
    from edgeseg.overwrite import check_overwrite
    from edgeseg.pruning.pipeline import PruneSettings, prune_on_dataset
    from edgeseg.report import pruning_steps

    check_overwrite(out, force=force)
    if (ratio is None) == (macs is None):
        raise UsageError("pass exactly one of --ratio and --macs")
    model, spec = load_checkpoint(checkpoint)
    report = prune_on_dataset(model, spec, PruneSettings(ratio, macs, finetune_epochs, finetune_minutes, calib_images,
                                                                align), data)
    save_checkpoint(out, model, spec)
    typer.echo(f"{report['summary']}; MACs {report['macs_before'] / 1e9:.2f} G → {report['macs_after'] / 1e9:.2f} G, "
               f"params {report['params_before'] / 1e6:.2f} M → {report['params_after'] / 1e6:.2f} M")
    typer.echo(pruning_steps(report))
    typer.echo(f"saved {out}")
