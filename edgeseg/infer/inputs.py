"""What `edgeseg infer` accepts: image files (PNG/JPEG/TIFF), NIfTI volumes, DICOM series folders, and folders
of these. Multi-channel models take nnU-Net-style channel files (``case_0000.nii.gz``, ``case_0001.nii.gz``)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import IMAGE_2D_EXTS, NIFTI_EXTS, Geometry, file_extension, read_array
from ..errors import EdgesegError
from .dicom import is_dicom_series, read_dicom_series

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class InputItem:
    """One case to segment: one file, one DICOM series folder, or one file per channel."""

    case_id: str
    paths: list[Path]
    kind: str  # "2d" (PNG/JPEG/TIFF), "nifti", "dicom"

    @property
    def source(self) -> str:
        return ", ".join(str(p) for p in self.paths)


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(file_extension(path))]


def _kind(path: Path) -> str | None:
    ext = file_extension(path)
    return "2d" if ext in IMAGE_2D_EXTS else "nifti" if ext in NIFTI_EXTS else None


def discover_inputs(paths: list[Path], in_channels: int) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """``(items, problems)``: the cases found under ``paths`` in order, and ``(path, why)`` for what cannot be
    used (missing, unsupported, incomplete channel sets)."""
    files: list[Path] = []
    items: list[InputItem] = []
    problems: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if not path.exists():
            problems.append((str(path), "not found"))
        elif path.is_dir() and is_dicom_series(path):
            items.append(InputItem(path.name, [path], "dicom"))
        elif path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_dir() and is_dicom_series(child):
                    items.append(InputItem(child.name, [child], "dicom"))
                elif child.is_file() and _kind(child):
                    files.append(child)
        elif _kind(path):
            files.append(path)
        else:
            problems.append((str(path), f"unsupported input type {file_extension(path)!r} (PNG/JPEG/TIFF, NIfTI, "
                                        "or a DICOM series folder)"))
    if in_channels == 1:  # nnU-Net names the one channel case_0000: the case is "case"
        items += [InputItem(m["case"] if (m := _CHANNEL.match(_stem(f))) and m["channel"] == "0000" else _stem(f),
                            [f], _kind(f)) for f in files]
        return items, problems
    groups: dict[str, dict[int, Path]] = {}
    for f in files:
        match = _CHANNEL.match(_stem(f))
        if match is None:  # e.g. an RGB PNG for a 3-channel model
            items.append(InputItem(_stem(f), [f], _kind(f)))
        else:
            groups.setdefault(match["case"], {})[int(match["channel"])] = f
    for case, channels in groups.items():
        if sorted(channels) != list(range(in_channels)):
            problems.append((case, f"the model takes {in_channels} channel files {case}_0000 … "
                                   f"{case}_{in_channels - 1:04d}; found {sorted(channels)}"))
        else:
            items.append(InputItem(case, [channels[c] for c in range(in_channels)], _kind(channels[0])))
    return items, problems


def read_item(item: InputItem) -> tuple[np.ndarray, Geometry]:
    """``(channels, *spatial)`` float image and its geometry; channel files must share their geometry."""
    if item.kind == "dicom":
        return read_dicom_series(item.paths[0])
    arrays = [read_array(p) for p in item.paths]
    if len({a.shape[1:] for a, _ in arrays}) > 1:
        raise EdgesegError(f"{item.source}: channel files differ in size {[a.shape[1:] for a, _ in arrays]}")
    image = np.concatenate([a for a, _ in arrays]) if len(arrays) > 1 else arrays[0][0]
    return image, arrays[0][1]
