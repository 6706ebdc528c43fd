"""What every runtime implements: a :class:`Target` builds an :class:`Artifact` from the FP32 ONNX and loads it as a
:class:`Predictor`; it also states its runtime facts (infer preference, bench workload, tool versions, profile
options). Adding a runtime = one module with a ``Target`` subclass registered by
:func:`~edgeseg.targets.registry.register_target`, plus a profile ``.toml``.

A target module imports its heavy build tools (nncf, onnxruntime.quantization, tensorrt) inside ``build``
only, so ``load``/``run`` work on a device that has nothing but that runtime installed.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError


@dataclass
class BuildRequest:
    """What a target needs to build one artifact."""

    fp32_onnx: Path
    out_dir: Path                      # the (temporary) bundle directory; artifacts go straight in it
    profile: "TargetProfile"           # noqa: F821 (edgeseg.targets.profiles.TargetProfile)
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

    def merged_options(self) -> dict:
        """The profile's ``[options]`` with this request's overrides on top."""
        return {**self.profile.options, **self.options}


class Predictor(Protocol):
    """A loaded model: ``predictor(batch)`` maps float32 (B, C, *size) to logits (B, classes, *size).

    The one name for it: every ``Target.load`` returns one (``OrtPredictor``, ``OvPredictor``, ``TorchPredictor``,
    ``TrtPredictor``), :mod:`edgeseg.inference` runs any of them case by case, and the public
    :class:`edgeseg.Predictor` (``bundle.predictor()``) wraps one with the bundle's preprocessing — its
    ``logits(batch)`` is this call. A target's predictor also says ``executed_precision``: what the runtime
    really ran (e.g. OpenVINO's execution graph)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class Target:
    """A deployment runtime. Subclass it, set the class attributes, implement ``build`` and ``load``, and
    register it with :func:`~edgeseg.targets.register_target` (edgeseg's own targets do exactly that)."""

    name: str = ""                               # the runtime name artifacts record: "onnxruntime", …
    aliases: tuple[str, ...] = ()                # other names ``get_target`` accepts ("ort", "onnx")
    short_name: str = ""                         # its word in bench/gate tables' short artifact names ("ort")
    default_profiles: dict[str, str] = {}        # precision → profile name (``compress --targets``)
    default: bool = False                        # built by ``compress`` when no targets are named
    infer_preference: int | None = None          # rank for ``backend="auto"`` (lower first); None: not an infer backend
    options: dict[str, type | tuple[type, ...]] = {}  # the keys a profile's ``[options]`` accepts, with their types
    tool_dists: tuple[str, ...] = ()             # distributions whose versions the bundle manifest records
    # how its model files (roles model, end_to_end) end (".onnx"): a manifest naming one otherwise is refused, as
    # the ending chooses the content checks (edgeseg.bundle.contents); None: no rule (an outside target's choice)
    model_suffix: str | None = None
    # ``workload_runner(path, threads, rank) -> Predictor``: the bench's fixed CPU workload ONNX
    # (:mod:`edgeseg.benchmark.workload`) on this runtime for inputs of ``rank`` dimensions; None: no CPU workload
    workload_runner = None

    def missing(self, build: bool = False) -> str | None:
        """Why this target cannot run (or build) here, or None when it can."""
        return None

    def build(self, request: BuildRequest) -> Artifact:
        """Build one artifact into ``request.out_dir``."""
        raise NotImplementedError

    def load_end_to_end(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> Predictor | None:
        """The artifact's end-to-end graph (:mod:`edgeseg.targets.pre_post`: the image as stored, uint8 (H, W, C),
        in; its label map, uint8 (H, W), out) loaded, or None when the artifact has none."""
        return None

    def load(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> Predictor:
        """A predictor of a bundle's artifact, from the verified bytes of its files."""
        raise NotImplementedError

    def load_probe(self, bundle_dir: Path, artifact: Artifact, tensors: list[str], threads: int | None = None):
        """The artifact with internal tensors (by their names in its FP32 ONNX source) as extra outputs, added in
        memory to its verified bytes (the files stay as built): ``batch → {tensor: value}``; None when this runtime
        cannot expose them (``edgeseg explain`` reads attention-gate coefficients this way)."""
        return None

    def not_ready(self, artifact: Artifact, cache: bool = False) -> str | None:
        """Why ``infer`` cannot use this built artifact yet though the runtime is here (e.g. no engine built);
        ``cache``: a device cache folder is given to :meth:`prepare`."""
        return None

    def prepare(self, bundle_dir: Path, artifact: Artifact, cache: Path) -> Artifact:
        """Make what this device needs before :meth:`load` in ``cache`` (outside the possibly read-only bundle),
        or reuse it, and return the artifact with it in ``prepared`` (``infer --engine-cache``: TensorRT builds
        its engine on first use). The default needs nothing."""
        return artifact

    def stand_in(self, bundle_dir: Path, artifact: Artifact, threads: int | None, reason: str) -> tuple[Predictor, str] | None:
        """Where the runtime is missing (``reason``): ``(predictor, note)`` that checks the artifact's accuracy
        another way, or None (the artifact is not measured)."""
        return None

    def layer_profile(self, bundle_dir: Path, artifact: Artifact, sample: np.ndarray, threads: int | None,
                      runs: int) -> list[dict]:
        """Where one batch's time goes: a row per executed layer ``{"layer", "op", "exec", "ms"}`` (median over
        ``runs`` runs after a warm-up), from the runtime's own profiler. Runtimes without one say so."""
        raise EdgesegError(f"{self.name}: no per-layer profiler in edgeseg for this runtime")

    def tool_versions(self) -> dict[str, str]:
        """``{distribution: version}`` of this runtime's installed tools (recorded in the bundle manifest)."""
        return dist_versions(*self.tool_dists)

    def check_options(self, options: dict, where: str) -> None:
        """Refuse (one line) a profile ``[options]`` key this target does not accept, or a value of another type."""
        for key, value in options.items():
            if key not in self.options:
                accepted = ", ".join(sorted(self.options)) or "none"
                close = difflib.get_close_matches(key, list(self.options), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise EdgesegError(f"{where}: unknown [options] key {key!r} for target {self.name}{hint}; "
                                   f"accepted: {accepted}")
            expected = self.options[key] if isinstance(self.options[key], tuple) else (self.options[key],)
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
                kinds = " or ".join(t.__name__ for t in expected)
                raise EdgesegError(f"{where}: [options] {key} must be {kinds}, got {value!r}")


def require_tensors(artifact: Artifact, tensors: list[str], graph_tensors) -> None:
    """A one-line error unless every tensor :meth:`Target.load_probe` is asked for is in the artifact's graph."""
    if missing := [t for t in tensors if t not in graph_tensors]:
        raise EdgesegError(f"{artifact.name}: its graph has no tensor {missing[0]}")


def dist_versions(*dists: str) -> dict[str, str]:
    """``{distribution: version}`` of those of ``dists`` that are installed."""
    import importlib.metadata as md

    versions = {}
    for dist in dists:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


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
