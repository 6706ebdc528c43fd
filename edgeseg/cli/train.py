"""Commands of the model: ``models``, ``train``, ``evaluate``, ``info``, ``import-weights``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import (
    Amp,
    ArchArgs,
    Flip,
    JsonFlag,
    Normalization,
    Resize,
    Split,
    app,
    command_line,
    force_option,
    parse_kwargs,
    print_json,
    print_scores,
    say,
    user_errors,
    value,
)
from edgeseg.errors import UsageError

FLIP_AXES = {"x": (-1,), "y": (-2,), "xy": (-1, -2), "none": ()}


@app.command("models")
def models_cmd(json_out: JsonFlag = False):
    """List the registered architectures."""
    from edgeseg.models import list_models

    models = list_models()
    if json_out:
        print_json([{"name": name, "description": desc} for name, desc in models.items()])
        return
    for name, desc in models.items():
        typer.echo(f"{name:16s} {desc}")


@app.command("train")
@user_errors
def train_cmd(data: Path = typer.Option(..., help="Dataset folder (nnU-Net v2 raw layout)."),
              out: Path = typer.Option(..., help="Checkpoint file to write (.ckpt)."),
              arch: str = typer.Option("hybrid", help="Architecture (see `edgeseg models`)."),
              size: int = typer.Option(256, help="Model input side."),
              epochs: int = typer.Option(30),
              batch_size: int = typer.Option(8),
              lr: float = typer.Option(2e-3),
              seed: int = typer.Option(0),
              patience: int = typer.Option(8, help="Early stop after this many epochs without val Dice gain."),
              normalization: Normalization = typer.Option(Normalization.zscore, help="Intensity normalization."),
              resize: Resize = typer.Option(Resize.resize, help="resize, or pad (centre pad/crop to size)."),
              arch_arg: ArchArgs = [],
              flip: Flip = typer.Option(Flip.x, help="Flip axes for augmentation."),
              amp: Amp = typer.Option(Amp.auto, help="bf16 autocast: auto (when the CPU has BF16), bf16, off."),
              device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda[:N]."),
              progressive_size: Optional[int] = typer.Option(None, help="Train the first part at this side (faster), then at --size."),
              progressive_fraction: float = typer.Option(0.5, help="Share of the steps run at --progressive-size (of the steps that fit --time-limit, when given)."),
              time_limit: Optional[float] = typer.Option(None, help="Minutes (e.g. 20 or 0.5): the steps, schedule and resolution phases are planned to fit them; training stops before an epoch would overrun them."),
              max_cases: Optional[int] = typer.Option(None, help="Use at most this many training cases."),
              max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
              force: bool = force_option("Overwrite an existing checkpoint.")):
    """Train a model and save the best checkpoint (by validation Dice)."""
    from edgeseg.checkpoint import read_spec
    from edgeseg.overwrite import check_overwrite
    from edgeseg.training.trainer import TrainConfig, train

    check_overwrite(out, force=force)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    cfg = TrainConfig(data=str(data), arch=arch, size=size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      patience=patience, normalization=value(normalization), resize=value(resize),
                      arch_kwargs=parse_kwargs(arch_arg), flip_axes=FLIP_AXES[value(flip)], amp=value(amp),
                      device=device, progressive_size=progressive_size, progressive_fraction=progressive_fraction,
                      time_limit_minutes=time_limit, max_cases=max_cases, max_steps=max_steps)
    path, metrics = train(cfg, out, command=command_line())
    print_scores({**metrics, "split": "val"})
    training = read_spec(path).training
    for note in training["plan"]["notes"]:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(f"stopped: {training['stop_reason']}; kept epoch {training['best_epoch']} (best val Dice); "
               f"saved {path} (`edgeseg info {path}` shows the plan)")


@app.command("evaluate")
@user_errors
def evaluate_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt)."),
                 data: Path = typer.Option(..., help="Dataset folder."),
                 split: Split = typer.Option(Split.val, help="val: the checkpoint's held-back cases; test: imagesTs/labelsTs."),
                 out: Optional[Path] = typer.Option(None, help="Also write the result as JSON to this file."),
                 json_out: JsonFlag = False,
                 force: bool = force_option("Replace an earlier edgeseg result at --out.")):
    """Per-class Dice and IoU of a checkpoint on a dataset split."""
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.data.io import atomic_write
    from edgeseg.evaluation import evaluate_checkpoint, evaluation_document
    from edgeseg.overwrite import check_overwrite

    if out:
        check_overwrite(out, force=force)
    model, spec = load_checkpoint(checkpoint)
    result = evaluate_checkpoint(model, spec, data, value(split))
    document = evaluation_document(result)
    if json_out:
        print_json(document)
    else:
        print_scores(result)
    if out:
        atomic_write(out, lambda tmp: tmp.write_text(json.dumps(document, indent=1)))
        say(f"wrote {out}", json_out)


@app.command("info")
@user_errors
def info_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt).")):
    """Print a checkpoint's spec (architecture, preprocessing, labels, data, metrics) as JSON."""
    from edgeseg.checkpoint import read_spec

    spec = read_spec(checkpoint).to_dict()
    spec.get("training", {}).pop("history", None)
    for split in spec.get("metrics", {}).values():
        split.pop("cases", None)
    typer.echo(json.dumps(spec, indent=1))


@app.command("import-weights")
@user_errors
def import_cmd(weights: Path = typer.Argument(..., help="Foreign PyTorch state dict (.pt/.pth)."),
               arch: str = typer.Option(..., help="Architecture the weights belong to."),
               in_channels: int = typer.Option(..., help="Input channels."),
               labels: str = typer.Option(..., help="Comma-separated label names, background first."),
               size: int = typer.Option(256, help="Model input side."),
               normalization: Normalization = typer.Option(Normalization.zscore, help="Intensity normalization."),
               resize: Resize = typer.Option(Resize.resize, help="resize, or pad (centre pad/crop to size)."),
               arch_arg: ArchArgs = [],
               out: Path = typer.Option(..., help="Checkpoint to write (.ckpt)."),
               force: bool = force_option("Replace an earlier edgeseg checkpoint at --out.")):
    """Convert a foreign state dict into an edgeseg checkpoint (pickles that would run code are refused)."""
    from edgeseg.checkpoint import CheckpointSpec, import_weights
    from edgeseg.data.preprocessing import PreprocessSpec
    from edgeseg.overwrite import check_overwrite

    check_overwrite(out, force=force)
    names = [n.strip() for n in labels.split(",") if n.strip()]
    dims = 3 if arch.endswith("3d") else 2
    spec = CheckpointSpec(arch=arch, arch_kwargs=parse_kwargs(arch_arg), in_channels=in_channels,
                          num_classes=len(names), label_names=names, spatial_dims=dims,
                          preprocessing=PreprocessSpec((size,) * dims, [f"ch{i}" for i in range(in_channels)],
                                                       resize=value(resize), normalization=value(normalization)))
    import_weights(weights, spec, out)
    typer.echo(f"saved {out}")
