"""Deployment targets: one module (or package) per runtime, each registering a :class:`Target` with
:func:`register_target` (see :mod:`edgeseg.targets.registry`); importing this package registers edgeseg's own."""
from __future__ import annotations

from types import MappingProxyType

from edgeseg.targets import onnxruntime_backend, openvino_backend, tensorrt, torch_backend  # noqa: F401  (they register themselves)
from edgeseg.targets.base import Artifact, BuildRequest, Predictor, Target
from edgeseg.targets.profiles import TargetProfile, list_profiles, load_profile
from edgeseg.targets.registry import (
    _ALIASES,
    _TARGETS,
    default_targets,
    find_target,
    get_target,
    infer_order,
    register_target,
    registered_targets,
    unregister_target,
)

TARGETS = MappingProxyType(_TARGETS)   # live, read-only views of the registry
ALIASES = MappingProxyType(_ALIASES)

__all__ = ["ALIASES", "Artifact", "BuildRequest", "Predictor", "TARGETS", "Target", "TargetProfile", "default_targets",
           "find_target", "get_target", "infer_order", "list_profiles", "load_profile", "register_target",
           "registered_targets", "unregister_target"]
