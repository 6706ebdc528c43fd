"""Checks of what is inside a bundle's model files, beyond their hashes.

Every artifact carries its own copy of the preprocessing spec and label names (ONNX ``metadata_props``,
OpenVINO ``rt_info``, the checkpoint's spec), so that a copied file still says how to feed it. These copies
must agree with the manifest — the one place inference reads them from — and ONNX files must not reference
external data (see :mod:`edgeseg.bundle.onnx_scan`).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from edgeseg.bundle.onnx_scan import check_self_contained
from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.validation import JSON_ERRORS

PREPROCESSING_KEY, LABELS_KEY = "edgeseg.preprocessing", "edgeseg.label_names"


def _openvino_metadata(data: bytes, rel: str) -> dict[str, str]:
    """``rt_info/edgeseg/*`` values of an OpenVINO IR ``.xml``."""
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:  # no entity expansion in what we parse
        raise EdgesegError(f"{rel}: OpenVINO IR with a DTD or entities refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise EdgesegError(f"{rel}: not a valid OpenVINO IR ({exc})") from None
    node = root.find("rt_info/edgeseg")
    return {} if node is None else {child.tag: child.get("value", "") for child in node}


def _checkpoint_metadata(data: bytes, rel: str) -> dict[str, str]:
    from edgeseg.checkpoint import _safetensors_header, _spec_from_header

    spec = _spec_from_header(_safetensors_header(data, rel), rel)
    return {PREPROCESSING_KEY: json.dumps(spec.preprocessing.to_dict()), LABELS_KEY: json.dumps(spec.label_names)}


def embedded_metadata(rel: str, data: bytes) -> dict[str, str] | None:
    """The edgeseg metadata a model file carries (None for files that carry none: weights, engines)."""
    if rel.endswith(".onnx"):
        return check_self_contained(data, rel).metadata
    if rel.endswith(".xml"):
        return _openvino_metadata(data, rel)
    if rel.endswith(".ckpt"):
        return _checkpoint_metadata(data, rel)
    return None


def _canonical(text: str, rel: str, key: str):
    try:
        return json.loads(text)
    except (TypeError, *JSON_ERRORS):
        raise EdgesegError(f"{rel}: embedded {key} is not valid JSON") from None


def check_contents(rel: str, data: bytes, manifest: dict) -> None:
    """Refuse a model file whose embedded preprocessing/labels disagree with the manifest, or that reads
    files besides itself."""
    metadata = embedded_metadata(rel, data)
    if metadata is None:
        return
    expected = {PREPROCESSING_KEY: manifest["preprocessing"], LABELS_KEY: manifest["model"]["label_names"]}
    for key, value in expected.items():
        if key not in metadata:
            raise VerificationError(f"{rel}: carries no {key}; not an artifact edgeseg built")
        if _canonical(metadata[key], rel, key) != value:
            raise VerificationError(f"{rel}: its embedded {key} differs from the manifest's (one of them was edited)")
