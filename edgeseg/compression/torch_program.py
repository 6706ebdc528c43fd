"""TorchScript (``.pt``) and ExportedProgram (``.pt2``) models as ``compress``'s input (issue J): exported to an
FP32 ONNX (then :mod:`.onnx_source`'s path), with the program's own outputs kept as the parity reference.

Both formats hold a program, and their loaders unpickle with ``weights_only=False`` (``torch.export.load``) or run
TorchScript code (``torch.jit.load``): loading one runs what its author put in it. edgeseg loads them only when
told the file is trusted (``--trust-code``), and says so otherwise."""
from __future__ import annotations

import zipfile
from pathlib import Path

from edgeseg.errors import InputError

UNTRUSTED = ("{path}: a {kind} file runs code when it is loaded ({why}); edgeseg loads it only with --trust-code "
             "(trust_code=True), for a file you made or trust. Safer: export it to ONNX yourself and compress the "
             ".onnx, or import the PyTorch weights (docs/import.md)")


def program_kind(path: str | Path) -> str | None:
    """``"ExportedProgram"``, ``"TorchScript"`` or None (not a program file)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith("/archive_format") or n.endswith("serialized_exported_program.json") for n in names):
        return "ExportedProgram"  # torch.export.save's PT2 archive
    if any("/code/__torch__/" in n for n in names):
        return "TorchScript"      # torch.jit.save's archive: the program's TorchScript source
    return None


def load_program(path: Path, kind: str, trust_code: bool):
    """The program as a callable torch module (eval mode), when ``trust_code``."""
    import torch

    if not trust_code:
        why = ("torch.export.load unpickles with weights_only=False" if kind == "ExportedProgram"
               else "torch.jit.load runs its TorchScript")
        raise InputError(UNTRUSTED.format(path=path, kind=kind, why=why))
    try:
        if kind == "ExportedProgram":
            return _Frozen(torch.export.load(str(path)).module())
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # a file torch cannot read: the user's
        raise InputError(f"{path}: unreadable {kind} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None


def program_onnx(module, kind: str, spec, work: Path) -> bytes:
    """The program exported to a self-contained FP32 ONNX (input ``image``, output ``logits``; dynamic batch, and
    dynamic spatial size where the program allows it)."""
    import torch

    shape = (1, spec.in_channels, *spec.preprocessing.size)
    path = work / "program.onnx"
    if kind == "TorchScript":  # the TorchScript exporter (the dynamo one takes nn.Module / ExportedProgram only)
        axes = {0: "batch", **{2 + i: f"s{i}" for i in range(spec.spatial_dims)}}
        torch.onnx.export(module, (torch.zeros(shape),), str(path), dynamo=False, opset_version=18,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": axes})
        return path.read_bytes()
    from edgeseg.onnx_export import export_onnx

    try:
        return export_onnx(module, path, shape).read_bytes()
    except Exception:  # a program specialized to its example shapes: export it at those
        return export_onnx(module, path, shape, dynamic_spatial=False).read_bytes()


def _frozen_class():
    import torch

    class Frozen(torch.nn.Module):
        """An ExportedProgram's module, callable like any model: its graph is already in inference form, and
        ``eval()`` (which its module refuses) leaves it alone."""

        def __init__(self, program):
            super().__init__()
            object.__setattr__(self, "program", program)  # not a child: train()/eval() do not reach it

        def forward(self, x):
            return self.program(x)

    return Frozen


def _Frozen(program):
    return _frozen_class()(program)
