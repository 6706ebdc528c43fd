"""The preprocessing spec: saved in every checkpoint so inference reproduces training exactly.

numpy only (no torch), so a runtime-only install can apply it on the device.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeseg.errors import EdgesegError

NORMALIZATIONS = ("zscore", "minmax", "ct_window", "fixed", "none")
RESIZE_MODES = ("resize", "pad", "sliding")
# What a command-line flag can choose: 'fixed' needs stats and 'sliding' its own fields, which come from an import
# (nnU-Net) or a spec file, never from one flag
FLAG_NORMALIZATIONS = tuple(n for n in NORMALIZATIONS if n != "fixed")
FLAG_RESIZE_MODES = ("resize", "pad")
# Fields added after version 1's hashes were recorded: left out of to_dict() at their defaults, so every spec
# written before them keeps its sha256.
_NATIVE_DEFAULTS = {"crop_nonzero": False, "mask_nonzero": False, "spacing": None, "overlap": 0.5, "stats": None,
                    "mirror_axes": None}
MAX_SIDE = 4096  # model input side in pixels/voxels: far above any segmentation network's input


def resize_linear(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize the trailing ``len(shape)`` axes with linear interpolation (half-pixel centres)."""
    out = arr.astype(np.float32, copy=False)
    for axis_offset, new in enumerate(shape):
        axis = arr.ndim - len(shape) + axis_offset
        old = out.shape[axis]
        if old == new:
            continue
        pos = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, old - 1)
        w = (pos - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def resize_nearest(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of the trailing axes (for label maps)."""
    out = arr
    for axis_offset, new in enumerate(shape):
        axis = arr.ndim - len(shape) + axis_offset
        old = out.shape[axis]
        if old != new:
            out = np.take(out, np.minimum((np.arange(new) * old / new + old / (2 * new)).astype(np.int64), old - 1), axis=axis)
    return out


def _pad_or_crop(arr: np.ndarray, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """Centre-pad (with ``fill``) or centre-crop the trailing axes to ``shape``."""
    out = arr
    for axis_offset, new in enumerate(shape):
        axis = arr.ndim - len(shape) + axis_offset
        old = out.shape[axis]
        if new > old:
            before = (new - old) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, new - old - before)
            out = np.pad(out, pad, constant_values=fill)
        elif new < old:
            start = (old - new) // 2
            out = np.take(out, np.arange(start, start + new), axis=axis)
    return out


@dataclass
class PreprocessSpec:
    """How raw channel-first images become model input, and how outputs go back to the input geometry.

    ``resize``: ``resize`` (to ``size``), ``pad`` (centre pad/crop to ``size``) or ``sliding`` — nnU-Net's way:
    the image keeps its own geometry (cropped to its non-zero box with ``crop_nonzero``, resampled to ``spacing``,
    a pixel of a 2D image counting as 1), ``size``-sized windows at ``overlap`` are blended with a Gaussian and the
    logits go back to the input's size (:mod:`edgeseg.data.native`); ``mirror_axes``: each window also predicted
    mirrored along every combination of these spatial axes, the logits averaged (nnU-Net's mirroring TTA). Normalization ``fixed``: clip to ``window``
    (when given), then ``(x - stats[0]) / stats[1]``; ``mask_nonzero``: z-score inside the non-zero region only.
    """

    size: tuple[int, ...]
    channel_names: list[str]
    resize: str = "resize"
    normalization: str = "zscore"
    window: tuple[float, float] | None = None
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    version: int = field(default=1)
    crop_nonzero: bool = False
    mask_nonzero: bool = False
    spacing: tuple[float, ...] | None = None
    overlap: float = 0.5
    stats: tuple[float, float] | None = None
    mirror_axes: tuple[int, ...] | None = None

    def __post_init__(self):
        self.size = tuple(int(s) for s in self.size)
        self.window = tuple(float(v) for v in self.window) if self.window else None
        self.clip_percentiles = tuple(float(v) for v in self.clip_percentiles) if self.clip_percentiles else None
        self.spacing = tuple(float(v) for v in self.spacing) if self.spacing else None
        self.stats = tuple(float(v) for v in self.stats) if self.stats else None
        self.mirror_axes = tuple(int(a) for a in self.mirror_axes) if self.mirror_axes else None
        self.overlap = float(self.overlap)
        if self.resize not in RESIZE_MODES:
            raise EdgesegError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.normalization not in NORMALIZATIONS:
            raise EdgesegError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.normalization == "ct_window" and not self.window:
            raise EdgesegError("normalization 'ct_window' needs window=(low, high)")
        if (self.normalization == "fixed") != bool(self.stats) or (self.stats and self.stats[1] <= 0):
            raise EdgesegError("normalization 'fixed' needs stats=(mean, std > 0), and only it takes stats")
        native = any(getattr(self, k) != v for k, v in _NATIVE_DEFAULTS.items() if k not in ("overlap", "stats"))
        if native and self.resize != "sliding":
            raise EdgesegError("crop_nonzero, mask_nonzero and spacing belong to resize 'sliding'")
        if self.spacing and (len(self.spacing) != len(self.size) or min(self.spacing) <= 0):
            raise EdgesegError(f"spacing {self.spacing}: one positive value per axis of the model's size")
        if self.mirror_axes and (self.resize != "sliding" or len(set(self.mirror_axes)) != len(self.mirror_axes)
                                 or not all(0 <= a < len(self.size) for a in self.mirror_axes)):
            raise EdgesegError(f"mirror_axes {self.mirror_axes}: distinct spatial axes (0..{len(self.size) - 1}) of "
                               "resize 'sliding'")
        if self.mask_nonzero and self.normalization != "zscore":
            raise EdgesegError("mask_nonzero is for normalization 'zscore'")
        if not 0.0 <= self.overlap < 1.0:
            raise EdgesegError(f"overlap {self.overlap}: must be in [0, 1)")

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    def to_dict(self) -> dict:
        d = json.loads(json.dumps(asdict(self)))
        return {k: v for k, v in d.items() if k not in _NATIVE_DEFAULTS or v != _NATIVE_DEFAULTS[k]}

    @classmethod
    def from_dict(cls, d: dict, field: str = "preprocessing") -> "PreprocessSpec":
        """The spec from its JSON form; a wrong type or an impossible value names the field."""
        from edgeseg.validation import (
            expect_choice,
            expect_dict,
            expect_int,
            expect_list,
            expect_number,
            expect_str_list,
            fail,
        )

        expect_dict(d, field)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            fail(field, f"unknown key(s) {', '.join(map(repr, unknown))}"[:200])
        for key in ("size", "channel_names"):
            if key not in d:
                fail(f"{field}.{key}", "missing")
        for i, s in enumerate(expect_list(d["size"], f"{field}.size", 1, 3)):
            expect_int(s, f"{field}.size[{i}]", 1, MAX_SIDE)
        expect_str_list(d["channel_names"], f"{field}.channel_names", 1, 64)
        expect_choice(d.get("resize", "resize"), f"{field}.resize", RESIZE_MODES)
        expect_choice(d.get("normalization", "zscore"), f"{field}.normalization", NORMALIZATIONS)
        for key in ("crop_nonzero", "mask_nonzero"):
            if not isinstance(d.get(key, False), bool):
                fail(f"{field}.{key}", f"expected true or false, got {type(d[key]).__name__}")
        if d.get("spacing") is not None:
            for i, v in enumerate(expect_list(d["spacing"], f"{field}.spacing", 1, 3)):
                expect_number(v, f"{field}.spacing[{i}]", 1e-6, 1e6)
        expect_number(d.get("overlap", 0.5), f"{field}.overlap", 0.0, 0.95)
        for i, a in enumerate(expect_list(d.get("mirror_axes") or [], f"{field}.mirror_axes", 0, 3)):
            expect_int(a, f"{field}.mirror_axes[{i}]", 0, 2)
        for key, lo, hi in (("window", -1e9, 1e9), ("clip_percentiles", 0.0, 100.0), ("stats", -1e9, 1e9)):
            if d.get(key) is not None:
                pair = [expect_number(v, f"{field}.{key}[{i}]", lo, hi)
                        for i, v in enumerate(expect_list(d[key], f"{field}.{key}", 2, 2))]
                if pair[0] >= pair[1] and key != "stats":
                    fail(f"{field}.{key}", f"low {pair[0]} must be below high {pair[1]}")
        expect_int(d.get("version", 1), f"{field}.version", 1, 1)
        try:
            return cls(**d)
        except EdgesegError as exc:
            fail(field, str(exc))

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def normalize(self, image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
        """Intensity normalisation per channel over the whole image/volume (before any slicing); with ``region``
        (a boolean mask, ``mask_nonzero``) z-scored inside it and 0 outside, as nnU-Net does."""
        if image.shape[0] != self.in_channels:
            raise EdgesegError(f"expected {self.in_channels} channels ({', '.join(self.channel_names)}), got {image.shape[0]}")
        x = image.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise EdgesegError("image contains NaN or Inf values")
        out = np.empty_like(x)
        for c in range(x.shape[0]):
            ch = x[c]
            if region is not None:
                inside = ch[region]
                out[c] = np.where(region, (ch - inside.mean()) / max(float(inside.std()), 1e-8), 0.0)
                continue
            if self.clip_percentiles and self.normalization in ("zscore", "minmax"):
                lo, hi = np.percentile(ch, self.clip_percentiles)
                ch = np.clip(ch, lo, hi)
            if self.normalization == "zscore":
                ch = (ch - ch.mean()) / max(float(ch.std()), 1e-6)
            elif self.normalization == "minmax":
                lo, hi = float(ch.min()), float(ch.max())
                ch = (ch - lo) / max(hi - lo, 1e-6)
            elif self.normalization == "ct_window":
                lo, hi = self.window
                ch = (np.clip(ch, lo, hi) - lo) / (hi - lo)
            elif self.normalization == "fixed":
                ch = ((np.clip(ch, *self.window) if self.window else ch) - self.stats[0]) / self.stats[1]
            out[c] = ch
        return out

    def fit(self, image: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
        """Bring normalised ``(C, *spatial)`` to the model size (resize, or centre pad/crop); ``spacing`` (1 per axis
        when None) is the image's, used by resize 'sliding' with a spacing."""
        if image.ndim - 1 != len(self.size):
            raise EdgesegError(f"expected a {len(self.size)}D image, got {image.ndim - 1}D")
        if self.resize == "resize":
            return resize_linear(image, self.size)
        if self.resize == "sliding":  # the window at the image's centre, after resampling to the spacing
            from edgeseg.data.native import to_spacing

            return _pad_or_crop(to_spacing(image, self, order=3, spacing=spacing), self.size, fill=0.0)
        # pad each channel with its own minimum: the background of z-scored or raw images is rarely 0
        return np.stack([_pad_or_crop(ch, self.size, fill=float(ch.min())) for ch in image])

    def __call__(self, image: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
        """Full preprocessing of one raw image: normalise, then fit to size. Returns float32."""
        return self.pair(image, spacing=spacing)[0]

    def pair(self, image: np.ndarray, label: np.ndarray | None = None,
             spacing: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One raw image (and its label map) as a model input (and target) of ``size``: the label follows every
        geometric step of the image (the crop to the non-zero box included)."""
        if self.resize == "sliding":
            from edgeseg.data.native import native_pair

            image, label = native_pair(self, image, label)
            return (self.fit(image, spacing).astype(np.float32),
                    None if label is None else self.fit_label(label, spacing))
        return self.fit(self.normalize(image)).astype(np.float32), None if label is None else self.fit_label(label)

    def fit_label(self, label: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
        """Bring a label map to the model size, as :meth:`fit` does for the image."""
        if self.resize == "resize":
            return resize_nearest(label, self.size)
        if self.resize == "sliding":
            from edgeseg.data.native import to_spacing

            label = to_spacing(label[None], self, order=0, spacing=spacing)[0]
        return _pad_or_crop(label, self.size, fill=0)

    def restore(self, logits: np.ndarray, shape: tuple[int, ...],
                spacing: tuple[float, ...] | None = None) -> np.ndarray:
        """Map ``(classes, *size)`` logits back to the original spatial ``shape`` (inverse of :meth:`fit`)."""
        if self.resize == "resize":
            return resize_linear(logits, tuple(shape))
        if self.resize == "sliding":  # whole images go through predict_logits; this undoes fit() for one window
            from edgeseg.data.native import from_spacing, spacing_shape

            resampled = spacing_shape(tuple(shape), self, spacing)
            return from_spacing(_pad_or_crop(logits, resampled, fill=0.0), shape, self, spacing)
        out = _pad_or_crop(logits, tuple(shape), fill=0.0)
        if any(s > t for s, t in zip(shape, self.size)):  # regions cropped away at input: call them background
            inside = _pad_or_crop(np.ones(self.size, bool), tuple(shape), fill=False)
            out[0][~inside] = np.abs(out).max() + 1.0
        return out
