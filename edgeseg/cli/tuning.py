"""Command ``edgeseg sensitivity``: a thin layer over :mod:`edgeseg.tuning.sensitivity`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import SensitivityMode, Split, app, force_option, user_errors, value


@app.command("sensitivity")
@user_errors
def sensitivity_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt)."),
                    calib: Path = typer.Option(..., help="Calibration data: dataset folder or `edgeseg calibrate` .npz."),
                    data: Path = typer.Option(..., help="Labelled dataset for the tuning cases."),
                    split: Split = typer.Option(Split.train, help="Split the tuning cases come from (never the reported val cases)."),
                    cases: int = typer.Option(16, help="Tuning cases (seeded; disjoint from the calibration set)."),
                    mode: SensitivityMode = typer.Option(SensitivityMode.quantize_one, help="quantize-one: FP32 with one node INT8 · float-one: all INT8 with one node float."),
                    calib_size: int = typer.Option(64, help="Calibration samples (when --calib is a dataset)."),
                    no_preset: bool = typer.Option(False, "--no-preset", help="Measure the fragile-ops preset's nodes too."),
                    threads: Optional[int] = typer.Option(None, help="Threads for PyTorch and ONNX Runtime."),
                    top: int = typer.Option(20, help="Rows shown on the terminal."),
                    out: Path = typer.Option(Path("sensitivity.json"), help="Result JSON; the bar chart (.png) goes beside it."),
                    force: bool = force_option("Overwrite existing result files.")):
    """Per-node Dice sensitivity of INT8 quantization (ranked table, JSON, PNG bar chart); builds no bundle."""
    from edgeseg.overwrite import check_overwrite
    from edgeseg.tuning.report import print_sensitivity, write_sensitivity
    from edgeseg.tuning.sensitivity import SensitivityConfig, measure_sensitivity

    check_overwrite(out, out.with_suffix(".png"), force=force)
    result = measure_sensitivity(SensitivityConfig(checkpoint=checkpoint, calib=calib, data=data, split=value(split),
                                                   cases=cases, mode=value(mode), calib_size=calib_size,
                                                   preset=not no_preset, threads=threads))
    print_sensitivity(result, top)
    paths = write_sensitivity(result, out)
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
