"""What ``compress`` and ``bench`` measure with: the model input the inference path makes of an image (the latency
sample) and a checkpoint outside the bundle as an artifact to time (e.g. the model before compression)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.evaluation import naming_case_file
from edgeseg.inference import predict_logits


def first_model_input(spec, image: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """The first batch the inference path feeds the model for ``image`` (of pixel ``spacing``), cut to one sample:
    the latency input."""
    return model_inputs(spec, image, spacing, first_only=True)[0]


def model_inputs(spec, image: np.ndarray, spacing: tuple[float, ...] | None = None,
                 first_only: bool = False) -> list[np.ndarray]:
    """Every sample the inference path feeds the model for ``image``, in order, each ``(C, *spatial)``: one for a 2D
    image, each slice of a volume for a 2D model, each sliding window for a 3D model."""
    captured: list[np.ndarray] = []

    def capture(batch: np.ndarray) -> np.ndarray:
        if not (first_only and captured):
            captured.extend(np.array(batch[i]) for i in range(1 if first_only else len(batch)))
        return np.zeros((batch.shape[0], spec.num_classes, *batch.shape[2:]), np.float32)

    predict_logits(capture, image, spec.preprocessing, spec.spatial_dims, spacing=spacing)
    return [c[None] for c in captured] if first_only else captured


def case_model_input(spec, dataset, case_id: str) -> np.ndarray:
    """:func:`first_model_input` of a dataset case (a volume's first slice for a 2D model); an error names the
    case's file."""
    with naming_case_file(dataset, case_id):
        image, geometry = dataset.load_image(case_id)
        return first_model_input(spec, image, geometry.spacing)


def checkpoint_artifact(path: Path, name: str, **recorded) -> Artifact:
    """An edgeseg checkpoint outside the bundle as an artifact (PyTorch eager FP32, ``root`` its folder)."""
    return Artifact(name=name, runtime="torch", precision="fp32", files={"model": path.name}, profile="",
                    recorded=recorded, root=path.parent)
