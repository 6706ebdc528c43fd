"""The ``edgeseg`` command line: a thin Typer layer over the library API."""
from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import EdgesegError

app = typer.Typer(help="Compress medical segmentation models for edge devices and measure what it cost.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Datasets: synthetic phantoms.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def user_errors(fn):
    """Turn an :class:`EdgesegError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_kwargs(pairs: list[str]) -> dict:
    """``["base=16", "fusion=cross_attention"]`` → ``{"base": 16, "fusion": "cross_attention"}`` (JSON values)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise EdgesegError(f"--arch-arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def print_scores(result: dict) -> None:
    from rich.table import Table

    from .progress import console

    table = Table(title=f"{result.get('dataset', '')} · {result.get('split', '')} · {result['num_cases']} cases")
    table.add_column("label")
    table.add_column("Dice", justify="right")
    table.add_column("IoU", justify="right")
    for label, s in result["mean"].items():
        table.add_row(label, f"{s['dice']:.4f}", f"{s['iou']:.4f}")
    console.print(table)


@app.command("models")
def models_cmd():
    """List the registered architectures."""
    from .models import list_models

    for name, desc in list_models().items():
        typer.echo(f"{name:16s} {desc}")


@data_app.command("phantom")
@user_errors
def phantom_cmd(out: Path = typer.Argument(..., help="Folder to create."),
                cases: int = typer.Option(40, help="Number of cases."),
                size: int = typer.Option(128, help="Image side in pixels."),
                dims: int = typer.Option(2, help="2 (PNG) or 3 (NIfTI volumes)."),
                channels: int = typer.Option(1, help="Channels (modalities) per case."),
                seed: int = typer.Option(0)):
    """Write a synthetic phantom dataset (organ ellipses with lesions) in the nnU-Net layout."""
    from .data import write_phantom_dataset

    write_phantom_dataset(out, cases=cases, size=size, dims=dims, channels=channels, seed=seed)
    typer.echo(f"wrote {cases} phantom cases to {out}")


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
              normalization: str = typer.Option("zscore", help="zscore | minmax | ct_window | none"),
              resize: str = typer.Option("resize", help="resize | pad (centre pad/crop to size)"),
              arch_arg: list[str] = typer.Option([], help="Architecture keyword, KEY=VALUE (repeatable)."),
              flip: str = typer.Option("x", help="Flip axes for augmentation: x, y, xy or none."),
              amp: str = typer.Option("auto", help="bf16 autocast: auto (when the CPU has BF16), bf16, off."),
              device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
              progressive_size: Optional[int] = typer.Option(None, help="Train the first part at this side (faster), then at --size."),
              progressive_fraction: float = typer.Option(0.5, help="Share of the steps run at --progressive-size (of the steps that fit --time-limit, when given)."),
              time_limit: Optional[float] = typer.Option(None, help="Minutes (e.g. 20 or 0.5): the steps, schedule and resolution phases are planned to fit them; training stops before an epoch would overrun them."),
              max_cases: Optional[int] = typer.Option(None, help="Use at most this many training cases."),
              max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
              force: bool = typer.Option(False, help="Overwrite an existing checkpoint.")):
    """Train a model and save the best checkpoint (by validation Dice)."""
    from .checkpoint import read_spec
    from .overwrite import check_overwrite
    from .train import TrainConfig, train

    check_overwrite(out, force=force)
    if amp not in ("auto", "bf16", "off"):
        raise EdgesegError(f"--amp must be auto, bf16 or off, got {amp!r}")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise EdgesegError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    axes = {"x": (-1,), "y": (-2,), "xy": (-1, -2), "none": ()}
    if flip not in axes:
        raise EdgesegError(f"--flip must be one of {', '.join(axes)}")
    cfg = TrainConfig(data=str(data), arch=arch, size=size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      patience=patience, normalization=normalization, resize=resize,
                      arch_kwargs=parse_kwargs(arch_arg), flip_axes=axes[flip], amp=amp, device=device,
                      progressive_size=progressive_size, progressive_fraction=progressive_fraction,
                      time_limit_minutes=time_limit, max_cases=max_cases, max_steps=max_steps)
    path, metrics = train(cfg, out, command=shlex.join(["edgeseg", *sys.argv[1:]]))
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
                 split: str = typer.Option("val", help="train | val | all | test (val: the checkpoint's held-back cases; test: imagesTs/labelsTs)."),
                 json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON."),
                 force: bool = typer.Option(False, help="Replace an earlier edgeseg result at --json.")):
    """Per-class Dice and IoU of a checkpoint on a dataset split."""
    from .checkpoint import load_checkpoint
    from .data.io import atomic_write
    from .evaluate import evaluate_checkpoint, evaluation_document
    from .overwrite import check_overwrite

    if json_out:
        check_overwrite(json_out, force=force)
    model, spec = load_checkpoint(checkpoint)
    result = evaluate_checkpoint(model, spec, data, split)
    print_scores(result)
    if json_out:
        document = evaluation_document(result)
        atomic_write(json_out, lambda tmp: tmp.write_text(json.dumps(document, indent=1)))
        typer.echo(f"wrote {json_out}")


@app.command("info")
@user_errors
def info_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt).")):
    """Print a checkpoint's spec (architecture, preprocessing, labels, data, metrics) as JSON."""
    from .checkpoint import read_spec

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
               normalization: str = typer.Option("zscore"),
               resize: str = typer.Option("resize"),
               arch_arg: list[str] = typer.Option([], help="Architecture keyword, KEY=VALUE (repeatable)."),
               out: Path = typer.Option(..., help="Checkpoint to write (.ckpt)."),
               force: bool = typer.Option(False, help="Replace an earlier edgeseg checkpoint at --out.")):
    """Convert a foreign state dict into an edgeseg checkpoint (pickles that would run code are refused)."""
    from .checkpoint import CheckpointSpec, import_weights
    from .data.preprocessing import PreprocessSpec
    from .overwrite import check_overwrite

    check_overwrite(out, force=force)

    names = [n.strip() for n in labels.split(",") if n.strip()]
    dims = 3 if arch.endswith("3d") else 2
    spec = CheckpointSpec(arch=arch, arch_kwargs=parse_kwargs(arch_arg), in_channels=in_channels,
                          num_classes=len(names), label_names=names, spatial_dims=dims,
                          preprocessing=PreprocessSpec((size,) * dims, [f"ch{i}" for i in range(in_channels)],
                                                       resize=resize, normalization=normalization))
    import_weights(weights, spec, out)
    typer.echo(f"saved {out}")


@app.command("demo")
@user_errors
def demo_cmd(workdir: Path = typer.Option(Path("edgeseg-demo"), help="Folder for the phantom data and results."),
             compress: bool = typer.Option(True, help="Also compress the checkpoint to an INT8 bundle (the main job).")):
    """The embedded default: phantom data + the bundled checkpoint, evaluated and compressed end to end."""
    from .demo import run_demo
    from .report import print_compress_summary

    result, manifest = run_demo(workdir, compress)
    print_scores(result)
    if manifest:
        print_compress_summary(manifest)
        typer.echo(f"wrote {workdir / 'bundle'} ({len(manifest['artifacts'])} artifacts, "
                   f"{manifest['compress_seconds']:.0f} s); check it with `edgeseg verify {workdir / 'bundle'}`")


FULL_INSTALL_MODULES = {"torch", "torch_pruning", "nncf", "onnx", "onnxscript", "matplotlib", "jsonschema"}


def main() -> None:
    import signal

    # a plain `kill` raises SystemExit, so staging directories and temp files are cleaned up like on Ctrl-C
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        app()
    except ModuleNotFoundError as exc:  # e.g. `compress` on the runtime-only install (no torch)
        if exc.name and exc.name.split(".")[0] in FULL_INSTALL_MODULES:
            typer.echo(f"error: this command needs {exc.name.split('.')[0]}, which the runtime-only install lacks; "
                       "pip install 'edgeseg[full]' (edgeseg infer, verify and gate work without it)", err=True)
            sys.exit(2)
        raise


from . import cli_bench, cli_deploy, cli_gate, cli_infer, cli_tuning  # noqa: E402,F401  (register compress, …, bench, gate, infer, sensitivity)

if __name__ == "__main__":
    main()
