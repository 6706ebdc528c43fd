"""``import_model``: a foreign model → an edgeseg checkpoint, checked against the framework's own inference on
real images when data is given, with what was read (sha256), how it was mapped and the check recorded in it."""
from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

from edgeseg.errors import EdgesegError, InputError
from edgeseg.importers.base import ImportRequest
from edgeseg.importers.registry import find_importer

log = logging.getLogger(__name__)


def is_foreign(path: str | Path) -> bool:
    """Whether ``path`` is something other than an edgeseg checkpoint (a folder, a state dict, …)."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and path.suffix != ".ckpt")


def import_model(source: str | Path, out: str | Path, *, framework: str | None = None, data: str | Path | None = None,
                 split: str = "val", parity_cases: int = 8, min_agreement: float = 0.99, allow_mismatch: bool = False,
                 force: bool = False, **options) -> tuple[Path, dict]:
    """Import ``source`` (a MONAI bundle folder, an smp ``save_pretrained`` folder, a state dict with ``arch=``)
    into the checkpoint ``out``; returns ``(out, record)``. ``options``: the fields of :class:`ImportRequest`.
    With ``data`` (an nnU-Net-layout dataset), channel and label names default to its dataset.json and the
    import is checked on ``parity_cases`` cases of ``split`` against the framework's own pipeline: a mean pixel
    agreement below ``min_agreement`` is refused (``allow_mismatch`` writes it anyway, the numbers recorded)."""
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.overwrite import check_overwrite

    source, out = Path(source), Path(out)
    if not source.exists():
        raise InputError(f"{source}: not found")
    known = {f.name for f in fields(ImportRequest)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise EdgesegError(f"import: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    check_overwrite(out, force=force)
    dataset = _dataset(data)
    request = ImportRequest(**options)
    if dataset is not None:
        request.channel_names = request.channel_names or list(dataset.channel_names)
        request.labels = request.labels or list(dataset.label_names)
    importer = find_importer(source, request, framework)
    imported = importer.load(source, request)
    parity = _parity(imported, dataset, split, parity_cases)
    record = {**imported.source, "importer": importer.name, "notes": imported.notes, "parity": parity}
    if parity.get("pixel_agreement") and parity["pixel_agreement"]["mean"] < min_agreement and not allow_mismatch:
        raise EdgesegError(f"{source}: edgeseg's preprocessing does not reproduce {importer.name}'s own inference: "
                           f"pixel agreement {parity['pixel_agreement']['mean']:.4f} < {min_agreement} on "
                           f"{parity['cases']} cases (allow_mismatch writes it anyway)")
    imported.spec.training = {**imported.spec.training, "imported": record}
    save_checkpoint(out, imported.model, imported.spec)
    log.debug("imported %s (%s) → %s", source, importer.name, out)
    return out, record


def _dataset(data):
    if data is None:
        return None
    from edgeseg.data.nnunet import NnUNetDataset

    return NnUNetDataset(data, require_labels=False)


def _parity(imported, dataset, split: str, cases: int) -> dict:
    if imported.reference is None:
        return {"cases": 0, "skipped": "the framework has no inference pipeline in these files to compare with"}
    if dataset is None or cases <= 0:
        return {"cases": 0, "skipped": "no data given to check the import on"}
    from edgeseg.importers.parity import check_parity

    ids = dataset.split(split)[:cases]
    if not ids:
        raise EdgesegError(f"{dataset.root}: no cases in split {split!r} to check the import on")
    return check_parity(imported, dataset, ids)
