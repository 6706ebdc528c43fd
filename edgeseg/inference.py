"""Case-level prediction: preprocessing spec → model → back to the input geometry. Shared by every consumer."""
from __future__ import annotations

import numpy as np

from edgeseg.data.native import (
    crop_box,
    from_spacing,
    gaussian_weights,
    native_pair,
    to_spacing,
    window_starts,
)
from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.errors import EdgesegError
from edgeseg.targets.base import Predictor  # a float32 batch (B, C, *size) → logits (B, classes, *size); any runtime


def torch_predictor(model) -> Predictor:
    """A PyTorch module (eval mode, no grad) as a :class:`Predictor`
    (:class:`~edgeseg.targets.torch_backend.TorchPredictor`, what the torch target loads too)."""
    from edgeseg.targets.torch_backend import TorchPredictor

    return TorchPredictor(model)


def predict_logits(predict: Predictor, image: np.ndarray, spec: PreprocessSpec, model_dims: int,
                   batch_size: int = 8, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Logits ``(classes, *spatial)`` in the geometry of the raw ``(C, *spatial)`` image, whose pixel ``spacing``
    (1 per axis when None) only a spec with a spacing of its own uses.

    A 2D model on a 3D volume runs slice by slice along the last axis (after normalising the whole volume).
    """
    image_dims = image.ndim - 1
    if spec.resize == "sliding" and image_dims == model_dims:
        return native_logits(predict, image, spec, batch_size, spacing)
    if image_dims == model_dims == 3 and spec.resize == "pad" and any(s > r for s, r in zip(image.shape[1:], spec.size)):
        # trained on native-resolution patches: cover the whole volume instead of its centre crop
        return sliding_window_logits(predict, spec.normalize(image), spec.size, batch_size=max(1, batch_size // 4))
    if image_dims == model_dims:
        return spec.restore(predict(spec(image)[None])[0], image.shape[1:])
    if model_dims == 2 and image_dims == 3:
        volume = spec.normalize(image)
        out = None
        for start in range(0, volume.shape[-1], batch_size):
            zs = range(start, min(start + batch_size, volume.shape[-1]))
            logits = predict(np.stack([spec.fit(volume[..., z]) for z in zs]).astype(np.float32))
            if out is None:
                out = np.empty((logits.shape[1], *image.shape[1:]), np.float32)
            for i, z in enumerate(zs):
                out[..., z] = spec.restore(logits[i], image.shape[1:3])
        return out
    raise EdgesegError(f"a {model_dims}D model cannot segment a {image_dims}D image")


def predict_mask(predict: Predictor, image: np.ndarray, spec: PreprocessSpec, model_dims: int,
                 batch_size: int = 8, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Label map ``(*spatial)`` (uint8) in the geometry of the raw image."""
    return label_map(predict_logits(predict, image, spec, model_dims, batch_size, spacing))


def label_map(logits: np.ndarray) -> np.ndarray:
    """``logits.argmax(0)`` as uint8 (ties → the lower class, as argmax), one vectorised pass per class:
    argmax over the leading axis of a large float array is strided and ~50× slower for two classes."""
    labels = np.zeros(logits.shape[1:], np.uint8)
    best = logits[0]
    for k in range(1, logits.shape[0]):
        better = logits[k] > best
        labels[better] = k
        best = np.where(better, logits[k], best) if k < logits.shape[0] - 1 else best
    return labels


def gaussian_importance(shape: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """Weights for blending overlapping windows: a Gaussian centred on the window (sigma = scale × side),
    normalised to max 1 and floored so borders still count (nnU-Net's blending)."""
    grids = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    weight = np.exp(-sum((g / (sigma_scale * s)) ** 2 / 2 for g, s in zip(grids, shape)))
    return np.maximum(weight / weight.max(), 1e-3).astype(np.float32)


def _starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step))
    return starts + [size - window]


def sliding_window_logits(predict: Predictor, volume: np.ndarray, window: tuple[int, ...], overlap: float = 0.5,
                          batch_size: int = 2, *, pad_value: float | None = None, starts=None,
                          weight: np.ndarray | None = None) -> np.ndarray:
    """Logits ``(classes, *spatial)`` of a normalised ``(C, *spatial)`` volume from overlapping ``window``-sized
    patches, Gaussian-blended; a volume smaller than the window is padded with ``pad_value`` (default: each
    channel's minimum). ``starts(size, window, overlap)`` places the windows along an axis and ``weight`` blends
    them (defaults: a step of ``window × (1 - overlap)`` and :func:`gaussian_importance`). A float16 ``weight``
    accumulates in float16, each sum rounded as nnU-Net's predictor rounds it (its logits and weights are half)."""
    import itertools

    spatial = volume.shape[1:]
    padded_shape = tuple(max(s, w) for s, w in zip(spatial, window))
    if padded_shape != spatial:
        pads = [(0, 0)] + [((p - s) // 2, p - s - (p - s) // 2) for s, p in zip(spatial, padded_shape)]
        volume = np.stack([np.pad(ch, pads[1:], constant_values=float(ch.min() if pad_value is None else pad_value))
                           for ch in volume])
    else:
        pads = [(0, 0)] * volume.ndim
    starts = starts or (lambda size, w, ov: _starts(size, w, max(1, int(w * (1 - ov)))))
    corners = list(itertools.product(*[starts(p, w, overlap) for p, w in zip(padded_shape, window)]))
    weight = gaussian_importance(window) if weight is None else weight
    weight32 = weight.astype(np.float32, copy=False)
    out = norm = None
    for i in range(0, len(corners), batch_size):
        chunk = corners[i : i + batch_size]
        patches = np.stack([volume[(slice(None), *[slice(c, c + w) for c, w in zip(corner, window)])] for corner in chunk])
        logits = predict(np.ascontiguousarray(patches, dtype=np.float32))
        if out is None:
            out = np.zeros((logits.shape[1], *padded_shape), weight.dtype)
            norm = np.zeros(padded_shape, weight.dtype)
        for corner, patch in zip(chunk, logits):
            region = tuple(slice(c, c + w) for c, w in zip(corner, window))
            # in place; a float16 sum is added in float32 and rounded back, as nnU-Net's half tensors are
            target = out[(slice(None), *region)]
            np.add(target, patch * weight32, out=target, casting="unsafe")
            np.add(norm[region], weight32, out=norm[region], casting="unsafe")
    out = (out.astype(np.float32) / norm.astype(np.float32)).astype(weight.dtype).astype(np.float32, copy=False)
    return out[(slice(None), *[slice(b, b + s) for (b, _), s in zip(pads[1:], spatial)])]


def mirrored(predict: Predictor, axes: tuple[int, ...]) -> Predictor:
    """``predict`` averaged over the batch and its mirror images along every combination of the spatial ``axes``
    (nnU-Net's mirroring test-time augmentation): one call with all the mirrored copies stacked."""
    import itertools

    combos = [tuple(a + 2 for a in c) for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]

    def predict_mirrored(batch: np.ndarray) -> np.ndarray:
        copies = np.concatenate([batch] + [np.flip(batch, c) for c in combos])
        logits = predict(np.ascontiguousarray(copies))
        n = len(batch)
        return sum([logits[:n]] + [np.flip(logits[(i + 1) * n:(i + 2) * n], c) for i, c in enumerate(combos)]) / (
            len(combos) + 1)

    return predict_mirrored


def native_logits(predict, image: np.ndarray, spec, batch_size: int = 4,
                  spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Logits ``(classes, *spatial)`` of a raw ``(C, *spatial)`` image of pixel ``spacing``, in its own geometry
    (nnU-Net's path)."""
    box = crop_box(spec, image)
    normalized, _ = native_pair(spec, image, box=box)
    if spec.mirror_axes:  # each window goes 2^axes times through the model: fewer windows per call
        predict, batch_size = mirrored(predict, spec.mirror_axes), max(1, batch_size >> len(spec.mirror_axes))
    logits = sliding_window_logits(predict, to_spacing(normalized, spec, order=3, spacing=spacing), spec.size,
                                   overlap=spec.overlap, batch_size=batch_size, pad_value=0.0, starts=window_starts,
                                   weight=gaussian_weights(spec.size))
    logits = from_spacing(logits, normalized.shape[1:], spec, spacing)
    if all(b.start == 0 and b.stop == s for b, s in zip(box, image.shape[1:])):
        return logits
    out = np.zeros((logits.shape[0], *image.shape[1:]), np.float32)
    out[0] = np.abs(logits).max() + 1.0  # outside the non-zero box: background, as nnU-Net exports it
    out[(slice(None), *box)] = logits
    return out
