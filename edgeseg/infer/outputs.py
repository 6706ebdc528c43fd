"""What `edgeseg infer` writes per case, in the input's geometry: the label map (PNG for 2D images, NIfTI with
the input's affine for volumes), optionally softmax probabilities and a PNG overlay. Every file is written
to a temporary name and renamed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.io import Geometry, atomic_write, write_array
from ..errors import EdgesegError

_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240]], np.uint8)


def output_paths(out_dir: Path, case_id: str, kind: str, probabilities: bool, overlay: bool) -> dict[str, Path]:
    mask = out_dir / f"{case_id}{'.png' if kind == '2d' else '.nii.gz'}"
    paths = {"mask": mask}
    if probabilities:
        paths["probabilities"] = out_dir / f"{case_id}_probabilities{'.npy' if kind == '2d' else '.nii.gz'}"
    if overlay:
        paths["overlay"] = out_dir / f"{case_id}_overlay.png"
    return paths


def check_free(paths: dict[str, Path], force: bool) -> None:
    taken = [p for p in paths.values() if p.exists()]
    if taken and not force:
        raise EdgesegError(f"{taken[0]}: exists; pass --force to overwrite")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _display(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a ``(C, H, W)`` image: RGB as is, else the first channel stretched to 1–99 %."""
    if image.shape[0] == 3 and image.dtype == np.uint8:
        return np.moveaxis(image, 0, -1)
    ch = image[0].astype(np.float32)
    lo, hi = np.percentile(ch, (1, 99))
    grey = (np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay_png(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB overlay of the mask on the image; for a volume, the slice (last axis) with the most foreground."""
    if mask.ndim == 3:
        z = int(np.argmax((mask > 0).reshape(-1, mask.shape[-1]).sum(0)))
        image, mask = image[..., z], mask[..., z]
    base = _display(image).astype(np.float32)
    colours = _COLOURS[np.minimum(mask, len(_COLOURS) - 1)].astype(np.float32)
    blend = np.where((mask > 0)[..., None], (1 - alpha) * base + alpha * colours, base)
    return blend.astype(np.uint8)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, arr)


def write_outputs(paths: dict[str, Path], mask: np.ndarray, logits: np.ndarray | None, image: np.ndarray,
                  geometry: Geometry) -> None:
    write_array(paths["mask"], mask.astype(np.uint8), geometry)
    if "probabilities" in paths:
        prob = softmax(logits).astype(np.float32)
        if paths["probabilities"].suffix == ".npy":
            atomic_write(paths["probabilities"], lambda tmp: _save_npy(tmp, prob.astype(np.float16)))
        else:
            write_array(paths["probabilities"], prob, geometry)
    if "overlay" in paths:
        write_array(paths["overlay"], np.moveaxis(overlay_png(image, mask), -1, 0), None)
