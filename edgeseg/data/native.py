"""Images in their own geometry, as nnU-Net v2 predicts them (:class:`PreprocessSpec` with ``resize='sliding'``):
crop to the box of non-zero pixels, normalise, resample to the model's spacing (cubic spline, clipped to the
input's range), overlapping windows placed and weighted for a Gaussian blend, the logits resampled back (linear)
and put into the uncropped image (background outside the box; the whole path: ``edgeseg.inference.native_logits``). Each step is nnU-Net's own arithmetic (``crop_to_nonzero``,
``compute_new_shape``, skimage ``resize(mode='edge', anti_aliasing=False)``, ``compute_steps_for_sliding_window``,
``compute_gaussian``), written with numpy and scipy so a device install needs neither torch nor nnU-Net."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from edgeseg.errors import EdgesegError


def nonzero_box(image: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the pixels where any channel is non-zero (the whole image when none is)."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    return tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))


MAX_RESAMPLED_VOXELS = 2**29  # 2 GB of float32 per channel: a header spacing far off the plan's is refused, not run
ANISOTROPY = 3.0  # nnU-Net's ANISO_THRESHOLD: a volume whose spacings differ more is resampled slice by slice


def spacing_shape(shape: tuple[int, ...], spec, spacing: tuple[float, ...] | None = None) -> tuple[int, ...]:
    """The shape of an image of ``shape`` and ``spacing`` (1 per axis when None) at the spec's spacing (nnU-Net's
    rounding)."""
    if not spec.spacing:
        return tuple(shape)
    spacing = spacing or (1.0,) * len(shape)
    return tuple(int(round(old_spacing / new * old)) for old, old_spacing, new in zip(shape, spacing, spec.spacing))


def separate_axis(current: tuple[float, ...] | None, new: tuple[float, ...] | None) -> int | None:
    """The low-resolution axis nnU-Net resamples on its own (nearest neighbour) between two volume spacings:
    the single coarsest axis of the first spacing that is anisotropic, ``current`` before ``new``; None for 2D,
    for isotropic spacings, or when two axes are equally coarse (nnU-Net's ``determine_do_sep_z_and_axis``)."""
    for spacing in (current, new):
        if spacing is None:  # 1 per axis: isotropic
            continue
        if len(spacing) != 3:
            return None
        values = np.asarray(spacing, float)
        if values.max() / values.min() > ANISOTROPY:
            axes = np.flatnonzero(values == values.max())
            return int(axes[0]) if len(axes) == 1 else None
    return None


def resample(arr: np.ndarray, shape: tuple[int, ...], order: int, separate: int | None = None) -> np.ndarray:
    """``(C, *spatial)`` to ``(C, *shape)``, each channel with a spline of ``order`` (edge pixels repeated) and
    clipped to its own input range (order 0: nearest, for label maps). With ``separate`` (a volume's coarse axis),
    each slice across that axis is resampled (and clipped) on its own and the axis itself by nearest neighbour."""
    if tuple(arr.shape[1:]) == tuple(shape):
        return arr
    if min(shape) < 1:
        raise EdgesegError(f"image of {arr.shape[1:]} pixels is too small to resample to the model's spacing")
    if float(np.prod(shape, dtype=np.float64)) > MAX_RESAMPLED_VOXELS:
        raise EdgesegError(f"image of {arr.shape[1:]} pixels would be {tuple(shape)} at the model's spacing, more than "
                           f"{MAX_RESAMPLED_VOXELS:.3g} voxels (is its spacing right?)")
    if separate is not None:
        return _resample_separate(arr, tuple(shape), order, separate)
    out = np.empty((arr.shape[0], *shape), arr.dtype if order == 0 else np.float32)
    for c, channel in enumerate(arr):
        zoom = [new / old for new, old in zip(shape, channel.shape)]
        if order == 0:
            out[c] = ndimage.zoom(channel, zoom, order=0, mode="nearest", grid_mode=True)
            continue
        resized = ndimage.zoom(channel.astype(np.float64), zoom, order=order, mode="nearest", grid_mode=True)
        out[c] = np.clip(resized, channel.min(), channel.max())
    return out


def _resample_separate(arr: np.ndarray, shape: tuple[int, ...], order: int, axis: int) -> np.ndarray:
    plane = tuple(s for a, s in enumerate(shape) if a != axis)
    slices = np.moveaxis(arr, axis + 1, 1)  # (C, slices, *plane)
    inplane = np.stack([resample(channel, plane, order) for channel in slices])  # each slice is one "channel"
    inplane = np.moveaxis(inplane, 1, axis + 1)
    old, new = arr.shape[axis + 1], shape[axis]
    if old == new:
        return inplane
    # nnU-Net: map_coordinates(order 0, mode 'nearest') at scale * (i + 0.5) - 0.5; the same rounding, on indices
    coords = old / new * (np.arange(new) + 0.5) - 0.5
    picked = ndimage.map_coordinates(np.arange(old, dtype=np.float64), [coords], order=0, mode="nearest")
    return np.take(inplane, picked.astype(np.intp), axis=axis + 1)


def to_spacing(image: np.ndarray, spec, order: int, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """``(C, *spatial)`` of ``spacing`` (1 per axis when None) resampled to the spec's spacing (unchanged without
    one)."""
    shape = spacing_shape(image.shape[1:], spec, spacing)
    return resample(image, shape, order, separate_axis(spacing, spec.spacing) if spec.spacing else None)


def from_spacing(logits: np.ndarray, shape: tuple[int, ...], spec, spacing: tuple[float, ...] | None = None):
    """Logits at the spec's spacing back to ``shape``, the image's grid of ``spacing`` (linear; nnU-Net's
    separate-z rule, the spec's spacing as the current one)."""
    separate = separate_axis(spec.spacing, spacing) if spec.spacing else None
    return resample(logits, tuple(shape), order=1, separate=separate)


def crop_box(spec, image: np.ndarray) -> tuple[slice, ...]:
    """The region of ``image`` the model sees: its non-zero box with ``crop_nonzero``, else all of it."""
    return nonzero_box(image) if spec.crop_nonzero else tuple(slice(0, s) for s in image.shape[1:])


def native_pair(spec, image: np.ndarray, label: np.ndarray | None = None, box: tuple[slice, ...] | None = None):
    """The image cropped to its non-zero box (``crop_nonzero``; ``box`` when already known) and normalised there
    (``mask_nonzero``: inside the filled non-zero region only), and the label map cropped alike; both still at the
    image's spacing."""
    if image.ndim - 1 != len(spec.size):
        raise EdgesegError(f"expected a {len(spec.size)}D image, got {image.ndim - 1}D")
    box = crop_box(spec, image) if box is None else box
    cropped = image[(slice(None), *box)]
    region = ndimage.binary_fill_holes(np.any(cropped != 0, axis=0)) if spec.mask_nonzero else None
    return spec.normalize(cropped, region), None if label is None else label[box]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Window corners along one axis, evenly spread, at most ``window × (1 - overlap)`` apart (nnU-Net's)."""
    steps = int(np.ceil((size - window) / (window * (1 - overlap)))) + 1
    stride = (size - window) / (steps - 1) if steps > 1 else 0.0
    return [int(np.round(stride * i)) for i in range(steps)]


@lru_cache(maxsize=4)
def gaussian_weights(window: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """nnU-Net's blending weights, as nnU-Net holds them: a delta at the window's centre (``side // 2``) smoothed
    by a Gaussian of sigma ``side × sigma_scale`` (truncated at 4 sigma), scaled to max 10, float16, the zeros
    (float16 underflows too) raised to the smallest weight."""
    delta = np.zeros(window)
    delta[tuple(s // 2 for s in window)] = 1
    weight = ndimage.gaussian_filter(delta, [s * sigma_scale for s in window], 0, mode="constant", cval=0)
    weight = (weight / (weight.max() / 10)).astype(np.float16)
    weight[weight == 0] = weight[weight > 0].min()
    weight.flags.writeable = False
    return weight
