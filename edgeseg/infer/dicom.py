"""DICOM series → a volume with its geometry, in the layout NIfTI files read as: ``(1, x, y, z)`` with a RAS
affine, x along the image rows' direction (columns), y along the columns' direction (rows), z along the
slice normal."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.io import Geometry
from ..errors import EdgesegError


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file or any file with the DICOM preamble (``DICM`` at byte 128)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_series(folder: Path) -> bool:
    return folder.is_dir() and any(is_dicom_file(p) for p in folder.iterdir() if p.is_file())


def read_dicom_series(folder: Path) -> tuple[np.ndarray, Geometry]:
    """All slices of one series in ``folder``, sorted along the slice normal, rescaled to stored units."""
    try:
        import pydicom
    except ImportError:
        raise EdgesegError(f"{folder}: reading DICOM needs pydicom (pip install 'edgeseg[runtime]')") from None
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # pydicom raises many types for a damaged file or missing pixel data
            raise EdgesegError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
        if pixels.ndim != 2:
            raise EdgesegError(f"{path}: expected one 2D slice per file, got pixel data of shape {pixels.shape}")
        slices.append((ds, pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)))
    if not slices:
        raise EdgesegError(f"{folder}: no DICOM files")
    if len({s[0].get("SeriesInstanceUID") for s in slices}) > 1:
        raise EdgesegError(f"{folder}: holds more than one DICOM series; put each series in its own folder")
    first = slices[0][0]
    try:
        row, col = np.asarray(first.ImageOrientationPatient[:3], float), np.asarray(first.ImageOrientationPatient[3:], float)
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    except AttributeError as exc:
        raise EdgesegError(f"{folder}: DICOM geometry missing ({exc})") from None
    normal = np.cross(row, col)
    positions = [float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)) for ds, _ in slices]
    order = np.argsort(positions)
    slices = [slices[i] for i in order]
    positions = [positions[i] for i in order]
    if len({p.shape for _, p in slices}) > 1:
        raise EdgesegError(f"{folder}: slices of different sizes")
    gaps = np.diff(positions)
    dz = float(np.median(gaps)) if len(gaps) else float(getattr(first, "SliceThickness", 1.0) or 1.0)
    if len(gaps) and (dz <= 0 or np.any(np.abs(gaps - dz) > 0.01 * dz + 1e-3)):
        raise EdgesegError(f"{folder}: slices are not evenly spaced (duplicates or missing slices?)")
    volume = np.stack([p.T for _, p in slices], axis=-1)  # (x = column index, y = row index, z)
    origin = np.asarray(slices[0][0].ImagePositionPatient, float)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * col_spacing, col * row_spacing, normal * dz, origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return volume[None], Geometry((col_spacing, row_spacing, dz), ras.tolist())
