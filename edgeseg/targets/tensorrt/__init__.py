"""TensorRT, as a package: everything that imports ``tensorrt`` is here, and nothing outside it needs to.

- :mod:`.engine` — input shapes, the ``trtexec`` line, the engine build (TensorRT Python API), the device key;
- :mod:`.runtime` — :class:`TrtPredictor` (runs an engine) and :func:`gpu_missing`;
- :mod:`.engine_cache` — engines built on the device and cached outside the bundle (the Jetson entrypoint);
- :mod:`.backend` — the :class:`TensorRtTarget` registered here, and ``edgeseg build-engine``.

Imports go one way, engine ← runtime/engine_cache ← backend. TensorRT does not install on a machine without an
NVIDIA GPU; there the target still builds the QDQ ONNX, and its tests skip with the reason.
"""
from __future__ import annotations

from edgeseg.targets.registry import register_target
from edgeseg.targets.tensorrt.backend import QDQ_OP_TYPES, TensorRtTarget, build_bundle_engines, tensorrt_artifacts
from edgeseg.targets.tensorrt.engine import (
           build_engine,
           device_key,
           engine_shapes,
           gpu_name_key,
           input_shapes,
           trtexec_command,
)
from edgeseg.targets.tensorrt.engine_cache import cached_engine_path, ensure_engine
from edgeseg.targets.tensorrt.runtime import TrtPredictor, gpu_missing

register_target(TensorRtTarget)

__all__ = ["QDQ_OP_TYPES", "TensorRtTarget", "TrtPredictor", "build_bundle_engines", "build_engine",
           "cached_engine_path", "device_key", "engine_shapes", "ensure_engine", "gpu_missing", "gpu_name_key",
           "input_shapes", "tensorrt_artifacts", "trtexec_command"]
