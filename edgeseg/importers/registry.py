"""The importer registry: ``register_importer`` (as targets register), ``get_importer`` by name, and
``find_importer`` — the first registered importer whose ``detect`` accepts a source."""
from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError, UsageError
from edgeseg.importers.base import Importer, ImportRequest

_IMPORTERS: dict[str, Importer] = {}


def register_importer(cls: type[Importer]) -> type[Importer]:
    """Register an :class:`Importer` subclass under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Importer) and cls.name):
        raise EdgesegError(f"{cls!r} is not a named edgeseg.importers.Importer subclass")
    if cls.name in _IMPORTERS:
        raise EdgesegError(f"importer {cls.name!r} already registered")
    _IMPORTERS[cls.name] = cls()
    return cls


def importer_names() -> list[str]:
    return list(_IMPORTERS)


def get_importer(name: str) -> Importer:
    if name not in _IMPORTERS:
        raise UsageError(f"unknown framework {name!r}; known: {', '.join(_IMPORTERS)}")
    return _IMPORTERS[name]


def find_importer(source: Path, request: ImportRequest, framework: str | None = None) -> Importer:
    """The importer for ``source``: ``framework`` when named, else the first whose ``detect`` accepts it."""
    if framework:
        chosen = get_importer(framework)
    else:
        chosen = next((i for i in _IMPORTERS.values() if i.detect(source, request)), None)
        if chosen is None:
            raise EdgesegError(f"{source}: not a model edgeseg can import (an edgeseg .ckpt, a MONAI bundle folder, "
                               "an smp save_pretrained folder, or a state dict with --arch FAMILY:NAME)")
    reason = chosen.missing()
    if reason:
        raise EdgesegError(f"{source}: a {chosen.name} model; importing it {reason}")
    return chosen
