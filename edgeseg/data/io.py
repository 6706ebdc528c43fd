"""Read and write image/label files: PNG/JPEG/TIFF (2D) and NIfTI (3D), channel-first float arrays."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError, InputError, UsageError

IMAGE_2D_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_EXTS = (".nii.gz", ".nii")


def file_extension(path: str | Path) -> str:
    """The extension, double ones like ``.nii.gz`` included, lower-cased."""
    name = Path(path).name.lower()
    for ext in NIFTI_EXTS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


@dataclass
class Geometry:
    """Where the pixels are: spacing per spatial axis and, for NIfTI, the affine; ``header`` is the NIfTI header
    a volume's outputs copy (qform/sform and their codes, units), DICOM's one in scanner coordinates."""

    spacing: tuple[float, ...]
    affine: list[list[float]] | None = field(default=None)
    header: object | None = field(default=None, repr=False, compare=False)  # nibabel.Nifti1Header

    @property
    def axcodes(self) -> list[str] | None:
        """Orientation of the array axes as nibabel axcodes (``["R", "A", "S"]``, …); None without an affine."""
        if self.affine is None or len(self.affine) != 4:
            return None
        from nibabel.orientations import aff2axcodes

        return list(aff2axcodes(np.asarray(self.affine)))


def _nifti_geometry(path: Path, img) -> Geometry:
    """A NIfTI image's geometry; NaN/Inf spacing or a degenerate affine (nothing could be written back in
    that space) is an error naming the file."""
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    affine = np.asarray(img.affine, dtype=float)
    if not all(np.isfinite(spacing)) or not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: invalid NIfTI geometry: pixdim {spacing} / affine not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: invalid NIfTI geometry: the affine is singular (a pixdim of 0?)")
    return Geometry(spacing, affine.tolist(), img.header)


def read_array(path: str | Path, palette_indices: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read one file as ``(channels, *spatial)`` plus its geometry; any failure names the file. A palette image
    gives its colours, or with ``palette_indices`` its pixel values (a label map's labels)."""
    path = Path(path)
    ext = file_extension(path)
    try:
        if ext in NIFTI_EXTS:
            import nibabel as nib

            img = nib.load(str(path))
            geo = _nifti_geometry(path, img)  # checked before the voxels are read
            arr = np.asarray(img.dataobj)
            return (arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)), geo
        if ext in IMAGE_2D_EXTS:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("LA", "RGBA") or (im.mode == "P" and not palette_indices):
                    im = im.convert("RGB" if im.mode != "LA" else "L")
                arr = np.asarray(im)
            return (arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)), Geometry((1.0, 1.0))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except EdgesegError:
        raise
    except Exception as exc:  # PIL/nibabel raise many types for a corrupt file
        raise InputError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    raise InputError(f"{path}: unsupported file type {ext!r} (use PNG/JPEG/TIFF or NIfTI)")


def read_label(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read an integer label map ``(*spatial)`` (a palette PNG, e.g. `edgeseg infer`'s ``CASE_colour.png``, gives
    its pixel values); a non-integer or multi-channel label is an error."""
    arr, geo = read_array(path, palette_indices=True)
    if arr.shape[0] != 1:
        raise InputError(f"{path}: a label map must have one channel, found {arr.shape[0]}")
    arr = arr[0]
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{path}: label values must be integers")
    return arr.astype(np.int64), geo


def atomic_write(path: Path, write, before_rename=None) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a reader never sees a half-written file;
    ``before_rename(tmp_path)`` is called with the file complete, just before the rename."""
    from edgeseg.housekeeping import temp_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(f".{path.name}", file_extension(path), path.parent)  # named so a later run can sweep it
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        if before_rename is not None:
            before_rename(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_array(path: str | Path, arr: np.ndarray, geometry: Geometry | None = None, before_rename=None) -> None:
    """Write ``(*spatial)`` or ``(channels, *spatial)`` uint8/uint16 to PNG/TIFF, or any array to NIfTI (with a
    copy of ``geometry.header`` when there is one); ``before_rename``: as in :func:`atomic_write`."""
    path = Path(path)
    ext = file_extension(path)
    if ext in NIFTI_EXTS:
        import nibabel as nib

        data = arr if arr.ndim == 3 else np.moveaxis(arr, 0, -1)
        if geometry and geometry.affine:
            affine = np.asarray(geometry.affine)
        else:
            affine = np.diag([*(geometry.spacing if geometry else (1.0, 1.0, 1.0)), 1.0])
        header = None
        if geometry is not None and geometry.header is not None:  # the source's header, only the data type new
            header = geometry.header.copy()
            header.set_data_dtype(data.dtype)
        atomic_write(path, lambda tmp: nib.save(nib.Nifti1Image(data, affine, header), str(tmp)), before_rename)
    elif ext in IMAGE_2D_EXTS:
        from PIL import Image

        data = arr if arr.ndim == 2 else (arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))
        # PNG level 1: label maps barely compress better at the default 6, which takes ~2× longer to write
        options = {"compress_level": 1} if ext == ".png" else {}
        atomic_write(path, lambda tmp: Image.fromarray(data).save(tmp, format=Image.registered_extensions()[ext],
                                                                  **options), before_rename)
    else:
        raise UsageError(f"{path}: unsupported output type {ext!r}")


def read_toml(path: Path) -> dict:
    """A TOML file as a dict; an unreadable file or a syntax error becomes one line naming the file."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (JetPack 6): tomli is what became tomllib
        import tomli as tomllib

    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:  # ValueError: also > 4300 digits
        raise InputError(f"{path}: invalid TOML ({str(exc)[:200]})") from None


def read_json(path: Path, what: str):
    """A JSON file's content; an unreadable file or invalid JSON becomes one line naming the file and ``what``
    it should have been."""
    import json

    from edgeseg.validation import JSON_ERRORS

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, *JSON_ERRORS) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({str(exc)[:200]})") from None
