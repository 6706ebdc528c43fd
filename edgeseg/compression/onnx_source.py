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
from edgeseg.validation import JSON_ERRORS

ARCH = "onnx"                   # the manifest's model.arch of a bundle made from an ONNX file
MAX_BYTES = 2 << 30             # protobuf's limit: larger models need external data, which bundles refuse


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def _read_spec_file(spec_file: Path) -> dict:
    from edgeseg.data.io import read_toml

    if not spec_file.is_file():
        raise InputError(f"{spec_file}: spec file not found")
    try:
        data = json.loads(spec_file.read_text()) if spec_file.suffix == ".json" else read_toml(spec_file)
    except (EdgesegError, *JSON_ERRORS) as exc:
        raise InputError(f"{spec_file}: unreadable spec ({str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{spec_file}: a spec must be a table (labels, [preprocessing])")
    return {"labels": data.get("labels"), "preprocessing": data.get("preprocessing")}


def _metadata_fields(metadata: dict[str, str], source: Path) -> dict:
    if "edgeseg.preprocessing" not in metadata:
        raise InputError(f"{source}: the ONNX file does not say how to feed it (no edgeseg.preprocessing in its "
                         "metadata_props); pass --spec FILE (docs/import.md)")
    try:
        return {"labels": json.loads(metadata.get("edgeseg.label_names", "null")),
                "preprocessing": json.loads(metadata["edgeseg.preprocessing"])}
    except JSON_ERRORS:
        raise InputError(f"{source}: edgeseg metadata in the ONNX file is not JSON") from None


def _spec(fields: dict, where: str):
    from edgeseg.checkpoint import CheckpointSpec

    labels, pre = fields["labels"], fields["preprocessing"]
    if not isinstance(labels, list) or len(labels) < 2:
        raise InputError(f"{where}: labels must list ≥ 2 names, background first")
    if not isinstance(pre, dict) or not isinstance(pre.get("size"), list):
        raise InputError(f"{where}: a [preprocessing] table with size and channel_names is needed")
    return CheckpointSpec.from_dict({"format": "edgeseg-checkpoint", "arch": ARCH, "arch_kwargs": {},
                                     "in_channels": len(pre.get("channel_names") or []), "num_classes": len(labels),
                                     "label_names": labels, "spatial_dims": len(pre["size"]),
                                     "preprocessing": pre}, where)


def spec_from_file(spec_file: Path):
    """The :class:`~edgeseg.checkpoint.CheckpointSpec` (``arch = "onnx"``) a spec file describes."""
    return _spec(_read_spec_file(spec_file), str(spec_file))


def onnx_spec(data: bytes, source: Path, spec_file: Path | None = None):
    """The spec of an ONNX model: the spec file's when given, else its own edgeseg metadata's; checked."""
    from edgeseg.bundle.onnx_scan import check_self_contained

    metadata = check_self_contained(data, str(source)).metadata
    if spec_file is not None:
        return spec_from_file(spec_file)
    return _spec(_metadata_fields(metadata, source), str(source))


def check_onnx(data: bytes, spec, name: str) -> None:
    """Refuse (one line) an ONNX model ONNX Runtime cannot run at the spec's input size, or whose output is not
    one logit channel per label at that size."""
    from edgeseg.targets.onnxruntime_backend import OrtPredictor

    shape = (1, spec.in_channels, *spec.preprocessing.size)
    try:
        out = OrtPredictor(data, "fp32", "cpu", 1, name=name)(np.zeros(shape, np.float32))
    except Exception as exc:  # the runtime's own message says what does not fit
        raise InputError(f"{name}: ONNX Runtime cannot run it on a {shape} input: "
                         f"{str(exc).splitlines()[0][:160]}") from None
    expected = (1, spec.num_classes, *spec.preprocessing.size)
    if tuple(out.shape) != expected:
        raise InputError(f"{name}: outputs {tuple(out.shape)} for that input, expected {expected} (logits, one channel "
                         "per label, at the input size)")


def read_onnx_model(path: Path, spec_file: Path | None = None) -> tuple[bytes, object]:
    """``(bytes, spec)`` of an FP32 ONNX model, checked by :func:`check_onnx`."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path}: larger than 2 GiB (external data is not accepted in bundles)")
    data = path.read_bytes()
    spec = onnx_spec(data, path, spec_file)
    check_onnx(data, spec, path.name)
    return data, spec


def with_standard_names(model) -> None:
    """Rename an ``onnx.ModelProto``'s one input to ``image`` and its first output to ``logits`` (what every
    edgeseg artifact and calibration reader uses), in place."""
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise InputError(f"the ONNX model has {len(inputs)} inputs; edgeseg deploys single-input models")
    renames = {inputs[0].name: "image", graph.output[0].name: "logits"}
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def onnx_counts(data: bytes) -> tuple[None, int]:
    """``(MACs, parameters)`` of an ONNX model: MACs are not counted from a graph (None); parameters are the
    elements of its float initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model_from_string(data)
    floats = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    return None, int(sum(numpy_helper.to_array(t).size for t in floats))
