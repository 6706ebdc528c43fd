"""edgeseg: compress trained medical segmentation models for edge devices and measure what it cost.

The Python API (docs/api.md) is loaded on first use, so ``import edgeseg`` stays light and works on the
runtime-only install: ``edgeseg.load_bundle(...).predictor()`` never imports torch.
"""
__version__ = "0.1.0"

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
