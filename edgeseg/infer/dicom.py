"""DICOM series → a volume with its geometry, in the layout NIfTI files read as: ``(1, x, y, z)`` with a RAS
affine, x along the image rows' direction (columns), y along the columns' direction (rows), z along the
slice normal."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.io import Geometry
from edgeseg.errors import EdgesegError


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


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))


def _pydicom(folder: Path):
    try:
        import pydicom
    except ImportError:
        raise EdgesegError(f"{folder}: reading DICOM needs pydicom (pip install 'edgeseg[runtime]')") from None
    return pydicom


def dicom_series_shape(folder: Path) -> tuple[int, int, int]:
    """``(columns, rows, frames)`` of a series from its files' headers alone (no pixel data decoded): the frames
    of every file (multi-frame files count each), at the largest columns × rows of any."""
    pydicom = _pydicom(folder)
    files = _dicom_files(folder)
    if not files:
        raise EdgesegError(f"{folder}: no DICOM files")
    columns = rows = frames = 0
    for path in files:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["Columns", "Rows", "NumberOfFrames"])
            columns, rows = max(columns, int(ds.Columns)), max(rows, int(ds.Rows))
            frames += max(1, int(ds.get("NumberOfFrames", 1) or 1))
        except Exception as exc:  # pydicom raises many types for a damaged header
            raise EdgesegError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    return columns, rows, frames


def _numbers(ds, path: Path, keyword: str, count: int) -> np.ndarray:
    """A geometry attribute as ``count`` finite floats, else one line naming the file and the attribute."""
    value = ds.get(keyword)
    if value is None:
        raise EdgesegError(f"{path}: DICOM {keyword} missing (needed to place the slices in space)")
    try:
        numbers = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    except (TypeError, ValueError):
        numbers = np.array([])
    if numbers.size != count or not np.all(np.isfinite(numbers)):
        raise EdgesegError(f"{path}: DICOM {keyword} must hold {count} finite numbers, got {str(value)[:60]}")
    return numbers


def _in_plane_geometry(ds, path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Row and column direction cosines and the spacings between rows and between columns."""
    orientation = _numbers(ds, path, "ImageOrientationPatient", 6)
    row, col = orientation[:3], orientation[3:]
    row_spacing, col_spacing = _numbers(ds, path, "PixelSpacing", 2)
    if min(row_spacing, col_spacing) <= 0:
        raise EdgesegError(f"{path}: DICOM PixelSpacing must be positive, got {[row_spacing, col_spacing]}")
    if np.linalg.norm(np.cross(row, col)) < 1e-3:
        raise EdgesegError(f"{path}: DICOM ImageOrientationPatient rows and columns are parallel or zero")
    return row, col, row_spacing, col_spacing


def _scanner_header(ras_affine: np.ndarray):
    """The NIfTI header of a DICOM-derived volume: qform and sform in scanner coordinates, millimetres."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_qform(ras_affine, code="scanner")
    header.set_sform(ras_affine, code="scanner")
    header.set_xyzt_units("mm", "sec")
    return header


def read_dicom_series(folder: Path) -> tuple[np.ndarray, Geometry]:
    """All slices of one series in ``folder``, sorted along the slice normal, rescaled to stored units."""
    pydicom = _pydicom(folder)
    slices = []
    for path in _dicom_files(folder):
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # pydicom raises many types for a damaged file or missing pixel data
            raise EdgesegError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
        if pixels.ndim != 2:
            raise EdgesegError(f"{path}: expected one 2D slice per file, got pixel data of shape {pixels.shape}")
        slices.append((ds, path, pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)))
    if not slices:
        raise EdgesegError(f"{folder}: no DICOM files")
    if len({s[0].get("SeriesInstanceUID") for s in slices}) > 1:
        raise EdgesegError(f"{folder}: holds more than one DICOM series; put each series in its own folder")
    first, first_path, _ = slices[0]
    row, col, row_spacing, col_spacing = _in_plane_geometry(first, first_path)
    normal = np.cross(row, col)
    origins = [_numbers(ds, path, "ImagePositionPatient", 3) for ds, path, _ in slices]
    positions = [float(np.dot(origin, normal)) for origin in origins]
    order = np.argsort(positions)
    slices = [slices[i] for i in order]
    positions = [positions[i] for i in order]
    if len({p.shape for _, _, p in slices}) > 1:
        raise EdgesegError(f"{folder}: slices of different sizes")
    gaps = np.diff(positions)
    dz = float(np.median(gaps)) if len(gaps) else float(getattr(first, "SliceThickness", 1.0) or 1.0)
    if len(gaps) and (dz <= 0 or np.any(np.abs(gaps - dz) > 0.01 * dz + 1e-3)):
        raise EdgesegError(f"{folder}: slices are not evenly spaced (duplicates or missing slices?)")
    volume = np.stack([p.T for _, _, p in slices], axis=-1)  # (x = column index, y = row index, z)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * col_spacing, col * row_spacing, normal * dz, origins[order[0]]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return volume[None], Geometry((col_spacing, row_spacing, dz), ras.tolist(), _scanner_header(ras))
