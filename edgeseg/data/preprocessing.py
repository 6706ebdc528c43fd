"""The preprocessing spec: saved in every checkpoint so inference reproduces training exactly.

numpy only (no torch), so a runtime-only install can apply it on the device.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeseg.errors import EdgesegError

NORMALIZATIONS = ("zscore", "minmax", "ct_window", "none")
RESIZE_MODES = ("resize", "pad")
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
    """How raw channel-first images become model input, and how outputs go back to the input geometry."""

    size: tuple[int, ...]
    channel_names: list[str]
    resize: str = "resize"
    normalization: str = "zscore"
    window: tuple[float, float] | None = None
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    version: int = field(default=1)

    def __post_init__(self):
        self.size = tuple(int(s) for s in self.size)
        self.window = tuple(float(v) for v in self.window) if self.window else None
        self.clip_percentiles = tuple(float(v) for v in self.clip_percentiles) if self.clip_percentiles else None
        if self.resize not in RESIZE_MODES:
            raise EdgesegError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.normalization not in NORMALIZATIONS:
            raise EdgesegError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.normalization == "ct_window" and not self.window:
            raise EdgesegError("normalization 'ct_window' needs window=(low, high)")

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

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
        for key, lo, hi in (("window", -1e9, 1e9), ("clip_percentiles", 0.0, 100.0)):
            if d.get(key) is not None:
                pair = [expect_number(v, f"{field}.{key}[{i}]", lo, hi)
                        for i, v in enumerate(expect_list(d[key], f"{field}.{key}", 2, 2))]
                if pair[0] >= pair[1]:
                    fail(f"{field}.{key}", f"low {pair[0]} must be below high {pair[1]}")
        expect_int(d.get("version", 1), f"{field}.version", 1, 1)
        return cls(**d)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Intensity normalisation per channel over the whole image/volume (before any slicing)."""
        if image.shape[0] != self.in_channels:
            raise EdgesegError(f"expected {self.in_channels} channels ({', '.join(self.channel_names)}), got {image.shape[0]}")
        x = image.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise EdgesegError("image contains NaN or Inf values")
        out = np.empty_like(x)
        for c in range(x.shape[0]):
            ch = x[c]
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
            out[c] = ch
        return out

    def fit(self, image: np.ndarray) -> np.ndarray:
        """Bring normalised ``(C, *spatial)`` to the model size (resize, or centre pad/crop)."""
        if image.ndim - 1 != len(self.size):
            raise EdgesegError(f"expected a {len(self.size)}D image, got {image.ndim - 1}D")
        if self.resize == "resize":
            return resize_linear(image, self.size)
        # pad each channel with its own minimum: the background of z-scored or raw images is rarely 0
        return np.stack([_pad_or_crop(ch, self.size, fill=float(ch.min())) for ch in image])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Full preprocessing of one raw image: normalise, then fit to size. Returns float32."""
        return self.fit(self.normalize(image)).astype(np.float32)

    def fit_label(self, label: np.ndarray) -> np.ndarray:
        """Bring a label map to the model size, as :meth:`fit` does for the image."""
        if self.resize == "resize":
            return resize_nearest(label, self.size)
        return _pad_or_crop(label, self.size, fill=0)

    def restore(self, logits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Map ``(classes, *size)`` logits back to the original spatial ``shape`` (inverse of :meth:`fit`)."""
        if self.resize == "resize":
            return resize_linear(logits, tuple(shape))
        out = _pad_or_crop(logits, tuple(shape), fill=0.0)
        if any(s > t for s, t in zip(shape, self.size)):  # regions cropped away at input: call them background
            inside = _pad_or_crop(np.ones(self.size, bool), tuple(shape), fill=False)
            out[0][~inside] = np.abs(out).max() + 1.0
        return out
