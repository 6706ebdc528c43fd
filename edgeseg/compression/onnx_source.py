"""An FP32 ONNX model as ``compress``'s input (issue J): no torch module, so no pruning and no PyTorch
reference — ONNX Runtime FP32 of the same file is the reference drift is measured against.

What the model expects comes from its ``metadata_props`` when it carries edgeseg's keys (an artifact of an
earlier bundle, or an ONNX file written with them), else from a spec file (TOML or JSON, docs/import.md):

    labels = ["background", "lung"]
    [preprocessing]
    size = [128, 128]
    channel_names = ["xray"]
    normalization = "ct_window"
    window = [0, 255]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError, InputError

ARCH = "onnx"                   # the manifest's model.arch of a bundle made from an ONNX file
MAX_BYTES = 2 << 30             # protobuf's limit: larger models need external data, which bundles refuse


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def _spec_fields(metadata: dict[str, str], spec_file: Path | None, source: Path) -> dict:
    """``{"labels", "preprocessing"}`` from the spec file when given, else from edgeseg's metadata keys."""
    if spec_file is not None:
        from edgeseg.data.io import read_toml

        if not spec_file.is_file():
            raise InputError(f"{spec_file}: spec file not found")
        try:
            data = json.loads(spec_file.read_text()) if spec_file.suffix == ".json" else read_toml(spec_file)
        except (ValueError, EdgesegError) as exc:
            raise InputError(f"{spec_file}: unreadable spec ({str(exc)[:120]})") from None
        return {"labels": data.get("labels"), "preprocessing": data.get("preprocessing")}
    if "edgeseg.preprocessing" not in metadata:
        raise InputError(f"{source}: the ONNX file does not say how to feed it (no edgeseg.preprocessing in its "
                         "metadata_props); pass --spec FILE (docs/import.md)")
    try:
        return {"labels": json.loads(metadata.get("edgeseg.label_names", "null")),
                "preprocessing": json.loads(metadata["edgeseg.preprocessing"])}
    except ValueError:
        raise InputError(f"{source}: edgeseg metadata in the ONNX file is not JSON") from None


def onnx_spec(data: bytes, source: Path, spec_file: Path | None = None):
    """The :class:`~edgeseg.checkpoint.CheckpointSpec` of an ONNX model (``arch = "onnx"``), checked."""
    from edgeseg.bundle.onnx_scan import check_self_contained
    from edgeseg.checkpoint import CheckpointSpec

    metadata = check_self_contained(data, str(source)).metadata
    fields = _spec_fields(metadata, spec_file, source)
    labels, pre = fields["labels"], fields["preprocessing"]
    if not isinstance(labels, list) or len(labels) < 2:
        raise InputError(f"{spec_file or source}: labels must list ≥ 2 names, background first")
    if not isinstance(pre, dict) or not isinstance(pre.get("size"), list):
        raise InputError(f"{spec_file or source}: a [preprocessing] table with size and channel_names is needed")
    return CheckpointSpec.from_dict({"format": "edgeseg-checkpoint", "arch": ARCH, "arch_kwargs": {},
                                     "in_channels": len(pre.get("channel_names") or []), "num_classes": len(labels),
                                     "label_names": labels, "spatial_dims": len(pre["size"]),
                                     "preprocessing": pre}, str(spec_file or source))


def read_onnx_model(path: Path, spec_file: Path | None = None) -> tuple[bytes, object]:
    """``(bytes, spec)`` of an FP32 ONNX model, checked to run on ONNX Runtime at the spec's input size and to
    output one channel per label."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path}: larger than 2 GiB (external data is not accepted in bundles)")
    data = path.read_bytes()
    spec = onnx_spec(data, path, spec_file)
    from edgeseg.targets.onnxruntime_backend import OrtPredictor

    try:
        predictor = OrtPredictor(data, "fp32", "cpu", 1, name=path.name)
        out = predictor(np.zeros((1, spec.in_channels, *spec.preprocessing.size), np.float32))
    except Exception as exc:  # the runtime's own message says what does not fit
        raise InputError(f"{path}: ONNX Runtime cannot run it on a (1, {spec.in_channels}, "
                         f"{', '.join(map(str, spec.preprocessing.size))}) input: {str(exc).splitlines()[0][:160]}") from None
    expected = (1, spec.num_classes, *spec.preprocessing.size)
    if tuple(out.shape) != expected:
        raise InputError(f"{path}: outputs {tuple(out.shape)} for that input, expected {expected} (logits, one channel "
                         "per label, at the input size)")
    return data, spec


def onnx_counts(data: bytes) -> tuple[None, int]:
    """``(MACs, parameters)`` of an ONNX model: MACs are not counted from a graph (None); parameters are the
    elements of its float initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model_from_string(data)
    floats = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    return None, int(sum(numpy_helper.to_array(t).size for t in floats))
