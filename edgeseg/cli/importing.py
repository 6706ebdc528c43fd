"""Command ``edgeseg import``: a model trained elsewhere (nnU-Net folder, MONAI bundle, smp folder, a state dict + --arch) into an
edgeseg checkpoint, checked against the framework's own inference (a thin layer over
:func:`edgeseg.importers.import_model`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import (
    ArchArgs,
    JsonFlag,
    Normalization,
    Split,
    app,
    force_option,
    parse_kwargs,
    print_json,
    say,
    split_list,
    user_errors,
    value,
)
from edgeseg.errors import UsageError


def _size(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if not text:
        return None
    try:
        size = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size expects e.g. 128x128 (or 96x96x96), got {text!r}") from None
    if not 2 <= len(size) <= 3 or min(size) < 1:
        raise UsageError(f"--size: 2 or 3 positive sides, got {text!r}")
    return size


@app.command("import")
@user_errors
def import_cmd(source: Path = typer.Argument(..., help="nnU-Net v2 trained model folder, MONAI bundle folder, smp "
                                                      "save_pretrained folder, or a state dict (.pt/.pth/.safetensors) "
                                                      "with --arch."),
               out: Path = typer.Option(..., help="Checkpoint to write (.ckpt)."),
               framework: Optional[str] = typer.Option(None, help="nnunet, monai, smp or state-dict (default: detected)."),
               data: Optional[Path] = typer.Option(None, help="Dataset (nnU-Net layout): channel and label names, and "
                                                              "the cases the import is checked on."),
               split: Split = typer.Option(Split.val, help="Split whose first cases check the import."),
               parity_cases: int = typer.Option(8, min=0, help="Cases to compare with the framework's own inference."),
               min_agreement: float = typer.Option(0.99, min=0.0, max=1.0, help="Least mean pixel agreement accepted."),
               allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Write the checkpoint even below "
                                                                                   "--min-agreement."),
               arch: Optional[str] = typer.Option(None, help="For a state dict: FAMILY:NAME (monai:UNet, smp:Unet) or "
                                                             "an edgeseg architecture."),
               arch_arg: ArchArgs = [],
               labels: Optional[str] = typer.Option(None, help="Label names, background first (default: the data's)."),
               channels: Optional[str] = typer.Option(None, help="Channel names (default: the data's)."),
               size: Optional[str] = typer.Option(None, help="Model input size, e.g. 128x128 (smp, state dict)."),
               normalization: Optional[Normalization] = typer.Option(None, help="For a state dict or smp: the "
                                                                                "training's normalization."),
               fold: Optional[str] = typer.Option(None, help="nnU-Net: the fold to import (0-4, all)."),
               mirroring: bool = typer.Option(False, "--mirroring", help="nnU-Net: mirroring test-time augmentation "
                                                                         "on (as nnUNetv2_predict without "
                                                                         "--disable_tta; 4× the windows in 2D)."),
               force: bool = force_option("Replace an earlier edgeseg checkpoint at --out."),
               json_out: JsonFlag = False):
    """Import a model trained with nnU-Net v2, MONAI, segmentation_models_pytorch or plain PyTorch, checked against its own
    framework's inference on real images."""
    from edgeseg.importers import import_model

    options = {"arch": arch, "arch_kwargs": parse_kwargs(arch_arg), "labels": split_list([labels]) if labels else None,
               "channel_names": split_list([channels]) if channels else None, "size": _size(size),
               "normalization": value(normalization), "fold": fold,
               "mirroring": mirroring}
    path, record = import_model(source, out, framework=framework, data=data, split=value(split),
                                parity_cases=parity_cases, min_agreement=min_agreement, allow_mismatch=allow_mismatch,
                                force=force, **options)
    if json_out:
        print_json({"checkpoint": str(path), **record})
        return
    say(f"imported {source} ({record['importer']}: {record.get('network', '')}) → {path}")
    for note in record["notes"]:
        say(f"  {note}")
    parity = record["parity"]
    if parity.get("cases"):
        dice = ", ".join(f"{k} {v['mean']:.4f} (min {v['min']:.4f})" for k, v in parity["dice"].items())
        say(f"  against {record['framework']}'s own inference on {parity['cases']} cases: pixel agreement "
            f"{parity['pixel_agreement']['mean']:.4f} (min {parity['pixel_agreement']['min']:.4f}); Dice {dice}")
    else:
        say(f"  not checked against the framework: {parity.get('skipped') or parity.get('error')}")
