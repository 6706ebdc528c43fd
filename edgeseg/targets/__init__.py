"""Deployment targets: one module per runtime behind one protocol (see :mod:`edgeseg.targets.base`)."""
from __future__ import annotations

from ..errors import EdgesegError
from .base import Artifact, BuildRequest, Runner, Target
from .onnxruntime_backend import OnnxRuntimeTarget
from .openvino_backend import OpenVinoTarget
from .profiles import TargetProfile, list_profiles, load_profile
from .tensorrt_backend import TensorRtTarget
from .torch_backend import TorchTarget

TARGETS: dict[str, Target] = {t.name: t for t in (TorchTarget(), OnnxRuntimeTarget(), OpenVinoTarget(), TensorRtTarget())}
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt", "pytorch": "torch"}


def get_target(name: str) -> Target:
    """The target for a runtime name (``onnx``/``ort`` → onnxruntime, ``ov`` → openvino, ``trt`` → tensorrt)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TARGETS:
        raise EdgesegError(f"unknown target {name!r}; known: {', '.join(TARGETS)} (aliases: {', '.join(ALIASES)})")
    return TARGETS[key]


__all__ = ["Artifact", "BuildRequest", "Runner", "Target", "TargetProfile", "TARGETS", "get_target",
           "list_profiles", "load_profile"]
