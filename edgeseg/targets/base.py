"""The one protocol every runtime implements: build an artifact from the FP32 ONNX, load it, run it.

A target module imports its heavy build tools (nncf, onnxruntime.quantization, tensorrt) inside ``build``
only, so ``load``/``run`` work on a device that has nothing but that runtime installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .profiles import TargetProfile


@dataclass
class BuildRequest:
    """What a target needs to build one artifact."""

    fp32_onnx: Path
    out_dir: Path                      # the (temporary) bundle directory; artifacts go straight in it
    profile: TargetProfile
    calibration: dict[tuple[int, ...], np.ndarray]  # spatial size → (N, C, *size) float32 model inputs
    model_size: tuple[int, ...]        # the size the model was trained at (the default deployment size)
    float_nodes: list[dict]            # ONNX nodes that stay float (name, op_type, module, reason)
    metadata: dict[str, str]           # preprocessing + labels, written into the artifact itself
    options: dict = field(default_factory=dict)  # CLI overrides, e.g. {"calibration_method": "minmax"}
    checkpoint: Path | None = None     # the (pruned) edgeseg checkpoint, for the PyTorch reference

    def fixed_size(self) -> tuple[int, ...] | None:
        """The one spatial size the profile deploys at (inputs are always preprocessed to it), else None."""
        sizes = self.profile.spatial_sizes(self.model_size)
        return tuple(sizes[0]) if len(sizes) == 1 and self.options.get("static_spatial", True) else None


@dataclass
class Artifact:
    """One built artifact, as recorded in the bundle manifest (paths relative to the bundle)."""

    name: str
    runtime: str
    precision: str
    files: dict[str, str]              # role → relative path, e.g. {"model": "x.xml", "weights": "x.bin"}
    profile: str
    device: str = "cpu"
    float_nodes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # quantizer settings, build commands, notes

    def to_dict(self) -> dict:
        return {"name": self.name, "runtime": self.runtime, "precision": self.precision, "files": self.files,
                "profile": self.profile, "device": self.device, "float_nodes": self.float_nodes, "details": self.details}


class Runner(Protocol):
    """A loaded artifact: ``runner(batch)`` maps float32 (B, C, *size) to logits (B, classes, *size)."""

    executed_precision: str            # what the runtime really ran (e.g. OpenVINO's execution graph)

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class Target(Protocol):
    """A deployment runtime. Adding one = a module with a class like this + a profile in ``export/``."""

    name: str                          # "onnxruntime", "openvino", "tensorrt", "torch"
    default_profiles: dict[str, str]   # precision → profile name

    def missing(self, build: bool = False) -> str | None:
        """Why this target cannot run (or build) here, or None when it can."""

    def build(self, request: BuildRequest) -> Artifact: ...

    def load(self, bundle_dir: Path, artifact: dict, threads: int | None = None) -> Runner: ...


def module_missing(*modules: str) -> str | None:
    """A one-line reason naming the first of ``modules`` that cannot be imported, else None."""
    import importlib.util

    for mod in modules:
        try:
            if importlib.util.find_spec(mod) is None:
                return f"Python package '{mod}' is not installed"
        except (ImportError, ValueError):
            return f"Python package '{mod}' is not importable"
    return None
