"""edgeseg: compress trained medical segmentation models for edge devices and measure what it cost.

The Python API (docs/api.md) is loaded on first use, so ``import edgeseg`` stays light and works on the
runtime-only install: ``edgeseg.load_bundle(...).predictor()`` never imports torch.
"""
__version__ = "0.1.0"


def _no_third_party_telemetry() -> None:
    """NNCF and OpenVINO's model converter send usage telemetry by default (opt-out, through ``openvino_telemetry``),
    from a process they fork and join at exit. Without internet that process can hang edgeseg at exit for good
    (seen: ``edgeseg compress`` stuck in the telemetry child's ``getaddrinfo``), and a medical tool should not
    report its use anywhere unasked. With ``openvino_telemetry`` unimportable both fall back to their own no-op
    stubs; ``EDGESEG_ALLOW_TELEMETRY=1`` keeps it, and a process that imported it first keeps it too."""
    import os
    import sys

    if os.environ.get("EDGESEG_ALLOW_TELEMETRY") != "1":
        sys.modules.setdefault("openvino_telemetry", None)  # None: `import openvino_telemetry` raises ImportError


_no_third_party_telemetry()

_EXPORTS = {
    "compress": "edgeseg.api.compress",
    "load_bundle": "edgeseg.api.bundle", "Bundle": "edgeseg.api.bundle", "Predictor": "edgeseg.api.bundle",
    "ArtifactInfo": "edgeseg.api.bundle",
    "bench": "edgeseg.api.results", "BenchResult": "edgeseg.api.results",
    "gate": "edgeseg.api.results", "GateReport": "edgeseg.api.results", "gate_fleet": "edgeseg.api.results",
    "train": "edgeseg.api.stages", "TrainResult": "edgeseg.api.stages",
    "evaluate": "edgeseg.api.stages", "Evaluation": "edgeseg.api.stages",
    "prune": "edgeseg.api.stages", "PruneResult": "edgeseg.api.stages",
    "calibrate": "edgeseg.api.stages",
    "explain": "edgeseg.api.explain", "ExplainResult": "edgeseg.api.explain",
    "infer": "edgeseg.infer",
    "CalibrationSet": "edgeseg.calibration",
    "EdgesegError": "edgeseg.errors", "UsageError": "edgeseg.errors", "InputError": "edgeseg.errors",
    "VerificationError": "edgeseg.errors", "LimitBroken": "edgeseg.errors", "Incomplete": "edgeseg.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
