"""Case-level prediction: preprocessing spec → model → back to the input geometry. Shared by every consumer."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .data.preprocessing import PreprocessSpec
from .errors import EdgesegError

# A predictor maps a float32 batch (B, C, *size) to logits (B, classes, *size). Any runtime can provide one.
Predictor = Callable[[np.ndarray], np.ndarray]


def torch_predictor(model) -> Predictor:
    """Wrap a PyTorch module (eval mode, no grad) as a :data:`Predictor`."""
    import torch

    model.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return predict


def predict_logits(predict: Predictor, image: np.ndarray, spec: PreprocessSpec, model_dims: int,
                   batch_size: int = 8) -> np.ndarray:
    """Logits ``(classes, *spatial)`` in the geometry of the raw ``(C, *spatial)`` image.

    A 2D model on a 3D volume runs slice by slice along the last axis (after normalising the whole volume).
    """
    image_dims = image.ndim - 1
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
                 batch_size: int = 8) -> np.ndarray:
    """Label map ``(*spatial)`` (uint8) in the geometry of the raw image."""
    return predict_logits(predict, image, spec, model_dims, batch_size).argmax(0).astype(np.uint8)
