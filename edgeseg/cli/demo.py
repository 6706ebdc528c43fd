"""Commands of the embedded default: ``demo`` and ``data phantom``."""
from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.app import app, data_app, print_scores, user_errors


@data_app.command("phantom")
@user_errors
def phantom_cmd(out: Path = typer.Argument(..., help="Folder to create."),
                cases: int = typer.Option(40, help="Number of cases."),
                size: int = typer.Option(128, help="Image side in pixels."),
                dims: int = typer.Option(2, help="2 (PNG) or 3 (NIfTI volumes)."),
                channels: int = typer.Option(1, help="Channels (modalities) per case."),
                seed: int = typer.Option(0)):
    """Write a synthetic phantom dataset (organ ellipses with lesions) in the nnU-Net layout."""
    from edgeseg.data import write_phantom_dataset

    write_phantom_dataset(out, cases=cases, size=size, dims=dims, channels=channels, seed=seed)
    typer.echo(f"wrote {cases} phantom cases to {out}")


@app.command("demo")
@user_errors
def demo_cmd(workdir: Path = typer.Option(Path("edgeseg-demo"), help="Folder for the phantom data and results."),
             compress: bool = typer.Option(True, "--compress/--no-compress",
                                           help="Also compress the checkpoint to an INT8 bundle (the main job).")):
    """The embedded default: phantom data + the bundled checkpoint, evaluated and compressed end to end."""
    from edgeseg.demo import run_demo
    from edgeseg.report import print_compress_summary

    result, manifest = run_demo(workdir, compress)
    print_scores(result)
    if manifest:
        print_compress_summary(manifest)
        typer.echo(f"wrote {workdir / 'bundle'} ({len(manifest['artifacts'])} artifacts, "
                   f"{manifest['compress_seconds']:.0f} s); check it with `edgeseg verify {workdir / 'bundle'}`")
