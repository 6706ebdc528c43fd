"""What `edgeseg infer` writes per case, in the input's geometry: the label map (PNG for 2D images, NIfTI with
the input's header for volumes), optionally softmax probabilities and a PNG overlay. Every file is written
to a temporary name and renamed, and recorded in the output folder's ledger (``edgeseg-outputs.jsonl``):
``--force`` replaces only files listed there and unchanged since; an output folder holding inputs is refused."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from ..checkpoint import file_sha256
from ..data.io import Geometry, atomic_write, write_array
from ..errors import EdgesegError

LEDGER_NAME = "edgeseg-outputs.jsonl"
_LEDGER_HEADER = {"edgeseg": "infer outputs", "schema_version": 1}
_REPORT_KEYS = {"bundle", "artifact", "done", "failed", "stages_seconds"}  # what every infer report holds

_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240]], np.uint8)


def output_paths(out_dir: Path, case_id: str, kind: str, probabilities: bool, overlay: bool) -> dict[str, Path]:
    mask = out_dir / f"{case_id}{'.png' if kind == '2d' else '.nii.gz'}"
    paths = {"mask": mask}
    if probabilities:
        paths["probabilities"] = out_dir / f"{case_id}_probabilities{'.npy' if kind == '2d' else '.nii.gz'}"
    if overlay:
        paths["overlay"] = out_dir / f"{case_id}_overlay.png"
    return paths


def _json_object(path: Path) -> dict:
    """The JSON object in a regular file (not a link), else ``{}``: unreadable, not JSON, not an object."""
    try:
        data = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) else {}


def refuse_inputs_inside(out_dir: Path, inputs: list[Path]) -> None:
    """An output folder that is, or holds (at any depth, links resolved), one of the inputs is refused."""
    out = out_dir.resolve()
    for path in inputs:
        if path.resolve().is_relative_to(out):
            raise EdgesegError(f"{out_dir}: holds the input {path}; write the outputs to a folder outside the inputs")


class OutputLedger:
    """The files edgeseg wrote into an output folder, one JSON line each (file, sha256, input, bundle) after a
    header line, in ``edgeseg-outputs.jsonl``. A case's lines are appended with one ``write`` once its files are
    in place: O(1) per case (rewriting a 10k-entry JSON took 23 ms), and a kill cannot leave half a line.
    Thread-safe: the reader thread checks, the writer thread records."""

    def __init__(self, folder: Path, bundle: str):
        self.path, self.bundle, self._lock = folder / LEDGER_NAME, bundle, threading.Lock()
        self.files: dict[str, dict] = self._read() if self.path.exists() or self.path.is_symlink() else {}

    def _read(self) -> dict[str, dict]:
        try:
            lines = self.path.read_text().splitlines() if self.path.is_file() and not self.path.is_symlink() else []
            records = [json.loads(line) for line in lines]
        except (OSError, ValueError):
            records = []
        if not records or records[0] != _LEDGER_HEADER or not all(
                isinstance(r, dict) and isinstance(r.get("file"), str) and isinstance(r.get("sha256"), str)
                for r in records[1:]):
            raise EdgesegError(f"{self.path}: not an edgeseg output ledger (edgeseg keeps its record of the files "
                               "it wrote under this name); move it or choose another --out")
        return {r["file"]: r for r in records[1:]}  # the latest line of a file wins

    def check_free(self, paths: dict[str, Path], force: bool) -> None:
        """Each path is free, or (with ``force``) an output of ours unchanged since we wrote it."""
        for path in paths.values():
            if not (path.exists() or path.is_symlink()):
                continue
            entry = self.files.get(path.name)
            if entry is None:
                raise EdgesegError(f"{path}: exists and was not written by edgeseg (not in {LEDGER_NAME}); "
                                   "not overwritten: move it or choose another --out")
            if path.is_symlink() or not path.is_file() or file_sha256(path) != entry["sha256"]:
                raise EdgesegError(f"{path}: changed since edgeseg wrote it; not overwritten")
            if not force:
                raise EdgesegError(f"{path}: exists (written by a previous edgeseg infer); pass --force to replace it")

    def record(self, paths: dict[str, Path], source: str) -> None:
        """Append the files just written for one input."""
        records = [{"file": p.name, "sha256": file_sha256(p), "input": source, "bundle": self.bundle}
                   for p in paths.values()]
        with self._lock:
            header = [] if self.path.exists() else [_LEDGER_HEADER]
            data = "".join(json.dumps(r) + "\n" for r in header + records).encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self.files.update((r["file"], r) for r in records)


def check_report_path(path: Path, force: bool) -> None:
    """``--report FILE`` may only replace a previous edgeseg infer report, and only with ``force``."""
    if not (path.exists() or path.is_symlink()):
        return
    if not _REPORT_KEYS <= set(_json_object(path)):
        raise EdgesegError(f"{path}: exists and is not an edgeseg infer report; not overwritten: choose another "
                           "--report path")
    if not force:
        raise EdgesegError(f"{path}: exists (a previous edgeseg infer report); pass --force to replace it")


def _softmax_in_place(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class axis, computed in ``logits`` itself: a large image holds no extra copies."""
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def _display(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a ``(C, H, W)`` image: RGB as is, else the first channel stretched to 1–99 %."""
    if image.shape[0] == 3 and image.dtype == np.uint8:
        return np.moveaxis(image, 0, -1).copy()  # the overlay is drawn into it
    ch = image[0].astype(np.float32)
    lo, hi = np.percentile(ch, (1, 99))
    grey = (np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay_png(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB overlay of the mask on the image; for a volume, the slice (last axis) with the most foreground."""
    if mask.ndim == 3:
        z = int(np.argmax((mask > 0).reshape(-1, mask.shape[-1]).sum(0)))
        image, mask = image[..., z], mask[..., z]
    rgb = _display(image)
    foreground = mask > 0  # blended there only: no float copy of the whole image
    colours = _COLOURS[np.minimum(mask[foreground], len(_COLOURS) - 1)].astype(np.float32)
    rgb[foreground] = ((1 - alpha) * rgb[foreground] + alpha * colours).astype(np.uint8)
    return rgb


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, arr)


def write_outputs(paths: dict[str, Path], mask: np.ndarray, logits: np.ndarray | None, image: np.ndarray,
                  geometry: Geometry) -> None:
    """Write the mask and, as asked, the probabilities (``logits`` are overwritten by them) and the overlay."""
    write_array(paths["mask"], mask.astype(np.uint8), geometry)
    if "probabilities" in paths:
        prob = _softmax_in_place(logits.astype(np.float32, copy=False))
        if paths["probabilities"].suffix == ".npy":
            atomic_write(paths["probabilities"], lambda tmp: _save_npy(tmp, prob.astype(np.float16)))
        else:
            write_array(paths["probabilities"], prob, geometry)
    if "overlay" in paths:
        write_array(paths["overlay"], np.moveaxis(overlay_png(image, mask), -1, 0), None)
