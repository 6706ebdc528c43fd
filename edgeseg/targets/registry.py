"""The target registry: runtime name → :class:`~edgeseg.targets.base.Target`, like timm's ``@register_model``.

edgeseg's own targets register themselves on import, exactly as an outside one does::

    from edgeseg.targets import Target, register_target

    @register_target(aliases=("mine",))
    class MyTarget(Target):
        name = "my-runtime"
        ...

Everything that used to list runtimes reads this registry: ``get_target``, ``infer``'s ``backend="auto"`` order,
the bench workload, the tool versions in the bundle manifest, ``compress``'s default targets, the runtimes a
manifest may name. Worker processes (the isolated latency runs) re-register an outside target from
``EDGESEG_TARGETS``, which :func:`register_target` fills in — and which a user may set to load targets into the
command line: ``module:Class`` or ``/path/file.py:Class`` entries, comma-separated.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.targets.base import Target

ENV = "EDGESEG_TARGETS"
_TARGETS: dict[str, Target] = {}
_ALIASES: dict[str, str] = {}
_EXPORTED: dict[str, str] = {}   # name → its EDGESEG_TARGETS entry (outside targets registered in this process)
_LOADED: set[str] = set()        # EDGESEG_TARGETS entries already imported


def register_target(target=None, *, aliases: tuple[str, ...] = (), replace: bool = False):
    """Register a :class:`Target` subclass (instantiated without arguments) or instance under its ``name`` and
    ``aliases`` (plus these ``aliases``). A decorator with or without arguments, or a plain call; returns what
    it was given. A taken name or alias is an error unless ``replace``."""

    def add(obj):
        instance = obj() if isinstance(obj, type) else obj
        if not isinstance(instance, Target) or not isinstance(instance.name, str) or not instance.name:
            raise EdgesegError(f"register_target: {obj!r} is not a named edgeseg.targets.Target")
        name = instance.name.lower()
        names = {name, *(a.lower() for a in (*instance.aliases, *aliases))}
        taken = sorted(n for n in names if n in _TARGETS or n in _ALIASES)
        if taken and not replace:
            if type(_TARGETS.get(name)) is type(instance):  # the same class again (a re-import): keep the first
                return obj
            raise EdgesegError(f"register_target: {', '.join(taken)} already registered; pass replace=True")
        if replace and name in _TARGETS:
            unregister_target(name)
        _TARGETS[name] = instance
        _ALIASES.update({a: name for a in names - {name}})
        _export(name, obj)
        return obj

    return add if target is None else add(target)


def unregister_target(name: str) -> None:
    """Remove a target and its aliases (and its ``EDGESEG_TARGETS`` entry); unknown names are ignored."""
    key = _ALIASES.get(name.lower(), name.lower())
    _TARGETS.pop(key, None)
    for alias in [a for a, n in _ALIASES.items() if n == key]:
        del _ALIASES[alias]
    entry = _EXPORTED.pop(key, None)
    if entry:
        kept = [e for e in _env_entries() if e != entry]
        if kept:
            os.environ[ENV] = ",".join(kept)
        else:
            os.environ.pop(ENV, None)


def find_target(name: str) -> Target | None:
    """The target for a runtime name or alias, or None."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _TARGETS:
        _load_env()
        key = _ALIASES.get(name.lower(), name.lower())
    return _TARGETS.get(key)


def get_target(name: str) -> Target:
    """The target for a runtime name or alias (``onnx``/``ort`` → onnxruntime, ``ov`` → openvino, …)."""
    target = find_target(name)
    if target is None:
        raise EdgesegError(f"unknown target {name!r}; known: {', '.join(_TARGETS)} (aliases: {', '.join(_ALIASES)})")
    return target


def registered_targets() -> dict[str, Target]:
    """``{name: target}`` in registration order (edgeseg's own first)."""
    _load_env()
    return dict(_TARGETS)


def aliases() -> dict[str, str]:
    """``{alias: name}``."""
    _load_env()
    return dict(_ALIASES)


def target_names() -> tuple[str, ...]:
    """Every registered runtime name: what a bundle manifest's ``artifacts[].runtime`` may be."""
    return tuple(registered_targets())


def infer_order() -> list[str]:
    """The infer backends, most preferred first (``backend="auto"`` tries them in this order)."""
    ranked = [(t.infer_preference, n) for n, t in registered_targets().items() if t.infer_preference is not None]
    return [n for _, n in sorted(ranked, key=lambda rn: rn[0])]


def default_targets() -> list[str]:
    """The targets ``compress`` builds when none are named."""
    return [n for n, t in registered_targets().items() if t.default]


def runtime_tool_versions() -> dict[str, str]:
    """``{distribution: version}`` of every registered runtime's installed tools."""
    versions: dict[str, str] = {}
    for target in registered_targets().values():
        versions.update(target.tool_versions())
    return versions


def _env_entries() -> list[str]:
    return [e.strip() for e in os.environ.get(ENV, "").split(",") if e.strip()]


def _export(name: str, obj) -> None:
    """Name an outside target in ``EDGESEG_TARGETS`` so that edgeseg's worker processes register it too."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = sys.modules.get(cls.__module__)
    if cls.__module__.startswith("edgeseg.") or module is None or "<locals>" in cls.__qualname__:
        return
    attr = cls.__qualname__
    if not isinstance(obj, type):  # an instance: by its module-level name, when it has one
        attr = next((k for k, v in vars(module).items() if v is obj), attr)
    where = f"@{module.__file__}" if getattr(module, "__file__", None) else ""
    entry = f"{cls.__module__}{where}:{attr}"
    _EXPORTED[name] = entry
    _LOADED.add(entry)
    if entry not in _env_entries():
        os.environ[ENV] = ",".join([*_env_entries(), entry])


def _load_env() -> None:
    """Import and register the targets named in ``EDGESEG_TARGETS`` not loaded yet."""
    for entry in _env_entries():
        if entry in _LOADED:
            continue
        _LOADED.add(entry)
        source, _, attr = entry.rpartition(":")
        module_name, _, path = source.partition("@")
        if module_name.endswith(".py") and not path:
            module_name, path = f"edgeseg_target_{Path(module_name).stem}", module_name
        try:
            module = _import(module_name, path)
            obj = module
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError, OSError) as exc:
            raise EdgesegError(f"{ENV}: cannot load {entry!r} ({type(exc).__name__}: {exc})") from None
        register_target(obj)


def _import(module_name: str, path: str):
    if module_name in sys.modules:
        return sys.modules[module_name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        if not path:
            raise
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
