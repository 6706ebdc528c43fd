"""What `edgeseg infer` accepts: image files (PNG/JPEG/TIFF), NIfTI volumes, DICOM series folders, and folders
of these. Multi-channel models take nnU-Net-style channel files (``case_0000.nii.gz``, ``case_0001.nii.gz``)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.data.io import IMAGE_2D_EXTS, NIFTI_EXTS, Geometry, file_extension, read_array
from edgeseg.errors import EdgesegError
from edgeseg.infer.dicom import dicom_series_shape, is_dicom_series, read_dicom_series

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

# Memory per image grows with its pixels (a 9400² PNG of 86 KB took 6.5 GB with --probabilities), so images
# above these counts are refused from their header, before decoding. 2D: 2^25 ≈ 33.5 M pixels (5792²), above
# the largest routine 2D medical images (FFDM mammograms: 4096×5120 = 21 M, up to 4800×6000 = 28.8 M pixels).
# Volumes: 2^27 ≈ 134 M voxels, a 512×512×512 CT.
MAX_PIXELS = 2**25
MAX_VOXELS = 2**27


@dataclass
class InputItem:
    """One case to segment: one file, one DICOM series folder, or one file per channel."""

    case_id: str
    paths: list[Path]
    kind: str  # "2d" (PNG/JPEG/TIFF), "nifti", "dicom"
    stamp: list | None = None  # the inputs' stamp taken before they were read (edgeseg.infer.ledger.input_stamp)

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
            found = len(items) + len(files)
            for child in sorted(path.iterdir()):
                if child.is_dir() and is_dicom_series(child):
                    items.append(InputItem(child.name, [child], "dicom"))
                elif child.is_file() and _kind(child):
                    files.append(child)
            if len(items) + len(files) == found:
                problems.append((str(path), "no image, volume or DICOM series in this folder"))
        elif not path.is_file():  # a FIFO or device would block the reader
            problems.append((str(path), "not a regular file"))
        elif path in files:
            continue  # the same file named twice: segmented once
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
        if list(channels) == [0] and _kind(channels[0]) == "2d":  # nnU-Net's RGB case: every channel in case_0000
            items.append(InputItem(case, [channels[0]], "2d"))    # (the channel count is checked once read)
        elif sorted(channels) != list(range(in_channels)):
            problems.append((case, f"the model takes {in_channels} channel files {case}_0000 … "
                                   f"{case}_{in_channels - 1:04d}; found {sorted(channels)}"))
        else:
            items.append(InputItem(case, [channels[c] for c in range(in_channels)], _kind(channels[0])))
    return items, problems


def _header_shape(path: Path, kind: str) -> tuple[int, ...]:
    """Shape from the file's header alone: PIL's ``(width, height)``, NIfTI's every dimension (a fourth one is
    channels or time: it takes memory as well)."""
    try:
        if kind == "2d":
            from PIL import Image

            with Image.open(path) as im:
                return im.size
        import nibabel as nib

        return tuple(int(n) for n in nib.load(str(path)).shape)
    except FileNotFoundError:
        raise EdgesegError(f"{path}: file not found") from None
    except Exception as exc:  # PIL/nibabel raise many types for a corrupt header
        raise EdgesegError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def check_size(item: InputItem, max_pixels: int, max_voxels: int) -> None:
    """Refuse an image above ``max_pixels`` (2D) or a volume above ``max_voxels`` before decoding it."""
    volume = item.kind != "2d"
    limit, unit, option = (max_voxels, "voxels", "--max-voxels") if volume else (max_pixels, "pixels", "--max-pixels")
    for path in item.paths:
        shape = dicom_series_shape(path) if item.kind == "dicom" else _header_shape(path, item.kind)
        count = math.prod(shape)  # Python ints: a product of hostile dimensions cannot wrap round
        if count > limit:
            raise EdgesegError(f"{path}: {'×'.join(map(str, shape))} = {count:,} {unit}, above {option} {limit:,} "
                               f"(memory grows with the {unit}; raise {option} if this machine has it)")


def trained_orientation(axcodes) -> np.ndarray | None:
    """The nibabel orientation of a bundle's ``input.axcodes`` (e.g. ``["R", "A", "S"]``); None when not recorded."""
    if not axcodes:
        return None
    from nibabel.orientations import axcodes2ornt

    try:
        ornt = axcodes2ornt(tuple(axcodes))
    except (ValueError, TypeError):
        ornt = np.full((1, 2), np.nan)
    if len(ornt) != 3 or np.isnan(ornt).any():
        raise EdgesegError(f"bundle manifest: input.axcodes {axcodes!r} is not an orientation like ['R', 'A', 'S']")
    return ornt


def orientation_change(geometry: Geometry, trained: np.ndarray | None):
    """``(to_model, back)`` nibabel orientation transforms between a volume's own axes and the ``trained``
    orientation; None for a 2D image, a model without a recorded orientation, or a volume already in it."""
    if trained is None or geometry.affine is None or len(geometry.affine) != 4:
        return None
    from nibabel import orientations as nio

    own = nio.io_orientation(np.asarray(geometry.affine))
    if np.array_equal(own, trained):
        return None
    return nio.ornt_transform(own, trained), nio.ornt_transform(trained, own)


def reorient(array: np.ndarray, ornt) -> np.ndarray:
    """``(channels, *spatial)`` with the spatial axes flipped/permuted by a nibabel orientation transform (a
    view, no copy)."""
    from nibabel.orientations import apply_orientation

    return np.moveaxis(apply_orientation(np.moveaxis(array, 0, -1), ornt), -1, 0)


def to_model_orientation(image: np.ndarray, geometry: Geometry, trained: np.ndarray | None):
    """``(image, orientation)``: a volume on the axes of the ``trained`` orientation (a view) and the
    :func:`orientation_change` that took it there (None: unchanged; 2D images always are)."""
    orientation = orientation_change(geometry, trained) if image.ndim == 4 else None
    return (reorient(image, orientation[0]) if orientation else image), orientation


def model_spacing(spacing: tuple[float, ...] | None, orientation) -> tuple[float, ...] | None:
    """A volume's pixel spacing on the model's axes (after :func:`to_model_orientation` with ``orientation``)."""
    if not spacing or not orientation:
        return tuple(spacing) if spacing else None
    moved = [0.0] * len(spacing)
    for axis, (new_axis, _) in enumerate(orientation[0]):
        moved[int(new_axis)] = float(spacing[axis])
    return tuple(moved)


def from_model_orientation(array: np.ndarray, orientation) -> np.ndarray:
    """``(channels, *spatial)`` outputs back on the input's own axes (the inverse of :func:`to_model_orientation`)."""
    return reorient(array, orientation[1]) if orientation else array


def as_channel_first(image, in_channels: int, dims: int, source: str) -> np.ndarray:
    """A numeric array as ``(channels, *spatial)``; a 1-channel model also takes ``(*spatial)`` (``dims`` axes)."""
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise EdgesegError(f"{source}: expected a numeric image array, got dtype {array.dtype}")
    if array.size == 0:
        raise EdgesegError(f"{source}: the image is empty (shape {array.shape})")
    return array[None] if in_channels == 1 and array.ndim == dims else array


def check_dims(image: np.ndarray, spec, image_dims: int | None, source: str) -> None:
    """Refuse an image the model cannot take: wrong channels or dimensionality, NaN or Inf values."""
    dims = image.ndim - 1
    if dims not in (2, 3):
        raise EdgesegError(f"{source}: expected a 2D image or a 3D volume, got shape {image.shape}")
    if image.shape[0] != spec.in_channels:
        names = ", ".join(spec.preprocessing.channel_names)
        raise EdgesegError(f"{source}: the model takes {spec.in_channels} channel(s) ({names}), the input has "
                           f"{image.shape[0]}")
    if dims < spec.spatial_dims or (image_dims is not None and dims != image_dims):
        expected = image_dims or spec.spatial_dims
        raise EdgesegError(f"{source}: a {dims}D input to a model made for {expected}D "
                           f"{'volumes' if expected == 3 else 'images'}")
    if not np.all(np.isfinite(image)):
        raise EdgesegError(f"{source}: the image contains NaN or Inf values")


def read_item(item: InputItem) -> tuple[np.ndarray, Geometry]:
    """``(channels, *spatial)`` float image and its geometry; channel files must share their geometry."""
    if item.kind == "dicom":
        return read_dicom_series(item.paths[0])
    arrays = [read_array(p) for p in item.paths]
    if len({a.shape[1:] for a, _ in arrays}) > 1:
        raise EdgesegError(f"{item.source}: channel files differ in size {[a.shape[1:] for a, _ in arrays]}")
    _check_same_place(item, [geometry for _, geometry in arrays])
    image = np.concatenate([a for a, _ in arrays]) if len(arrays) > 1 else arrays[0][0]
    return image, arrays[0][1]


def _check_same_place(item: InputItem, geometries: list[Geometry]) -> None:
    """Channel files of one case must lie in the same place (affine equal to 0.01 mm): a mirrored or shifted
    channel would be fed to the model misregistered."""
    affines = [np.asarray(g.affine, float) for g in geometries if g.affine is not None]
    if len(affines) != len(geometries) and affines:
        raise EdgesegError(f"{item.source}: some channel files carry an affine and some do not")
    for path, affine in zip(item.paths[1:], affines[1:]):
        if affine.shape != affines[0].shape or not np.allclose(affine, affines[0], rtol=0, atol=0.01):
            raise EdgesegError(f"{path}: its affine differs from {item.paths[0].name}'s (channel files of a case must "
                               "share their geometry; resample them onto one grid first)")
