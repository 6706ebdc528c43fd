"""Bundles from Python: load and verify one, list its artifacts, segment arrays with a :class:`Predictor` — what
``edgeseg infer`` does for files, with the artifact's runtime alone (this module never imports torch)."""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.bundle import DIGEST_KEY, MANIFEST, failed_files, manifest_artifacts, read_manifest
from edgeseg.checkpoint import CheckpointSpec
from edgeseg.data.io import Geometry
from edgeseg.errors import EdgesegError
from edgeseg.infer.backend import choose_artifact
from edgeseg.infer.inputs import (
    as_channel_first,
    check_dims,
    from_model_orientation,
    model_spacing,
    to_model_orientation,
    trained_orientation,
)
from edgeseg.infer.outputs import softmax_in_place
from edgeseg.inference import label_map, predict_logits

ArtifactInfo = Artifact  # the name this API had for it: ``name``, ``runtime``, ``precision``, ``files`` and the rest


class Predictor:
    """One artifact of a bundle loaded in its runtime, with the bundle's preprocessing and its inverse.

    ``predict(image)`` gives the label map of a raw image in its own geometry; ``logits(batch)`` runs the model
    on a preprocessed batch. ``artifact``, ``runtime``, ``precision`` name what runs, ``why`` says why it was
    chosen. Made by :meth:`Bundle.predictor`."""

    def __init__(self, bundle: Bundle, artifact: Artifact, why: str, threads: int | None = None):
        from edgeseg.targets import get_target

        self.spec = bundle.spec
        self.artifact, self.runtime, self.precision = artifact.name, artifact.runtime, artifact.precision
        self.why = why
        layout = bundle.manifest.get("input") or {}
        self._image_dims = layout.get("image_dims")  # 2 or 3: what the model was given in training
        self._trained = trained_orientation(layout.get("axcodes"))
        # the runtime gets the bytes whose sha256 matched the loaded manifest, never a path to re-open
        self._runner = get_target(self.runtime).load(bundle.path, artifact, threads)

    def __repr__(self) -> str:
        return f"Predictor({self.artifact!r}, runtime={self.runtime!r}, precision={self.precision!r})"

    @property
    def labels(self) -> list[str]:
        """The label names; label map value ``i`` means ``labels[i]``."""
        return list(self.spec.label_names)

    def predict(self, image, *, affine=None) -> np.ndarray:
        """The ``uint8`` label map ``(*spatial)`` of one raw image ``(C, *spatial)`` — ``(*spatial)`` for a
        1-channel model; any int or float dtype — in the image's own geometry, preprocessed and restored as
        ``edgeseg infer`` does. ``affine`` (4×4 voxel-to-world, as nibabel's ``img.affine``) turns a volume to the
        orientation the model was trained in and the labels back; without it a volume is taken as already in
        that orientation. Bad input (channels, dimensionality, NaN/Inf, affine) raises :class:`EdgesegError`."""
        return label_map(self._image_logits(image, affine))

    def probabilities(self, image, *, affine=None) -> np.ndarray:
        """Softmax probabilities ``(classes, *spatial)`` float32 of one raw image, taken as :meth:`predict` takes it
        (what ``edgeseg infer --probabilities`` writes)."""
        return softmax_in_place(self._image_logits(image, affine).astype(np.float32, copy=False))

    def _image_logits(self, image, affine) -> np.ndarray:
        image = self._checked(image, self._image_dims)
        matrix = _affine(affine, image.ndim - 1)
        geometry = Geometry(_spacing(matrix, image.ndim - 1), matrix)
        model_image, orientation = to_model_orientation(image, geometry, self._trained)
        logits = predict_logits(self._runner, model_image, self.spec.preprocessing, self.spec.spatial_dims,
                                spacing=model_spacing(geometry.spacing, orientation))
        return from_model_orientation(logits, orientation)

    def preprocess(self, image) -> np.ndarray:
        """The model input ``(C, *size)`` float32 of one raw image of the model's dimensionality (what
        :meth:`logits` takes, stacked into a batch)."""
        return self.spec.preprocessing(self._checked(image, self.spec.spatial_dims))

    def logits(self, batch) -> np.ndarray:
        """The model's outputs ``(B, classes, *size)`` for a preprocessed batch ``(B, C, *size)`` (float32)."""
        batch = np.asarray(batch)
        size = ", ".join(map(str, self.spec.preprocessing.size))
        if batch.dtype.kind not in "biuf" or batch.ndim != self.spec.spatial_dims + 2 \
                or batch.shape[1] != self.spec.in_channels or batch.shape[0] == 0:
            raise EdgesegError(f"batch: expected preprocessed model inputs (B, {self.spec.in_channels}, {size}) "
                               f"float32, got shape {batch.shape} {batch.dtype}")
        if not np.all(np.isfinite(batch)):
            raise EdgesegError("batch: contains NaN or Inf values")
        return self._runner(np.ascontiguousarray(batch, np.float32))

    def _checked(self, image, image_dims: int | None) -> np.ndarray:
        image = as_channel_first(image, self.spec.in_channels, image_dims or self.spec.spatial_dims, "image")
        check_dims(image, self.spec, image_dims, "image")
        return image


def _affine(affine, dims: int) -> list[list[float]] | None:
    """A usable 4×4 voxel-to-world matrix of a volume (as :class:`Geometry` holds it), or None."""
    if affine is None:
        return None
    if dims != 3:
        raise EdgesegError("affine: only a volume has one; this is a 2D image")
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise EdgesegError(f"affine: expected a finite, invertible 4×4 voxel-to-world matrix (nibabel's img.affine), "
                           f"got shape {matrix.shape}")
    return matrix.tolist()


def _spacing(affine, dims: int) -> tuple[float, ...]:
    """The voxel sizes an affine gives (the lengths of its first three columns); 1 per axis without one."""
    if affine is None or dims != 3:
        return (1.0,) * dims
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0))


class Bundle:
    """A compressed model on disk: ``manifest.json`` and the artifacts it lists, each with its sha256
    (docs/bundle.md). Made by :func:`load_bundle` and :func:`edgeseg.compress`."""

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path, self.manifest = Path(path), manifest

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, artifacts={[a.name for a in self.artifacts]})"

    @cached_property
    def spec(self) -> CheckpointSpec:
        """The model's spec as the bundle records it: architecture, preprocessing, labels."""
        return CheckpointSpec.from_manifest(self.manifest)

    @property
    def artifacts(self) -> list[Artifact]:
        """Every artifact (``name``, ``runtime``, ``precision``, ``files``: role → path in the bundle, …), the FP32
        PyTorch reference first."""
        return manifest_artifacts(self.manifest)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or self.spec.label_names)

    @property
    def digest(self) -> str:
        """The manifest's content digest (pin it with ``load_bundle(path, expected_digest=...)``)."""
        return self.manifest[DIGEST_KEY]

    def verify(self) -> list[str]:
        """Problems found checking the manifest on disk (against the one loaded) and every file it lists; an
        empty list: the bundle is intact."""
        try:
            manifest = read_manifest(self.path)
        except EdgesegError as exc:
            return [str(exc)]
        if manifest[DIGEST_KEY] != self.digest:
            return [f"{self.path / MANIFEST}: changed since this Bundle was loaded"]
        return [f"{path}: {reason}" for path, reason in failed_files(self.path, manifest).items()]

    def predictor(self, backend: str = "auto", artifact: str | None = None, threads: int | None = None) -> Predictor:
        """A :class:`Predictor` for ``artifact`` (a name of :attr:`artifacts`), or the best one for ``backend``:
        ``auto`` takes TensorRT on an NVIDIA GPU (with an engine built), OpenVINO on x86, else ONNX Runtime, and
        within a runtime the compressed artifact first. The model loads from bytes checked against the manifest's
        sha256, so a modified file is refused (:class:`EdgesegError`) even after ``load_bundle(verify=False)``."""
        chosen, why = choose_artifact(self.artifacts, backend, artifact)
        return Predictor(self, chosen, why, threads)


def load_bundle(path: str | os.PathLike, verify: bool = True, expected_digest: str | None = None) -> Bundle:
    """Open the bundle at ``path``. ``verify=True`` checks every file against its sha256 (and the rules of
    docs/bundle.md) now; ``verify=False`` only the manifest's schema and digest (files are still checked when a
    predictor loads them). ``expected_digest`` pins the manifest to a digest obtained out of band. Raises
    :class:`EdgesegError` naming the first problem."""
    from edgeseg.bundle import load_bundle as verified_manifest

    manifest = verified_manifest(path, expected_digest) if verify else read_manifest(path, expected_digest)
    return Bundle(path, manifest)
