"""What an importer is and what it returns: one :class:`Importer` per framework reads that framework's saved model
and returns an :class:`Imported` — the network as an edgeseg model, its :class:`~edgeseg.checkpoint.CheckpointSpec`
(preprocessing taken from the framework's own pipeline) and, where the framework has an inference pipeline of its
own, that pipeline, so the import can be checked against it (:mod:`edgeseg.importers.parity`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass
class ImportRequest:
    """What the user said about the model beyond the files (the CLI's and the API's options)."""

    arch: str | None = None            # "monai:UNet", "smp:Unet": a network by name, with ``arch_kwargs``
    arch_kwargs: dict = field(default_factory=dict)
    weights: Path | None = None        # a state dict for ``arch`` (.pt/.pth/.safetensors)
    labels: list[str] | None = None    # label names, background first (when the files do not say)
    size: tuple[int, ...] | None = None
    channel_names: list[str] | None = None
    normalization: str | None = None   # for a network by name: how its training normalized (edgeseg's names)
    window: tuple[float, float] | None = None
    fold: str | None = None            # nnU-Net: the fold to import
    mirroring: bool = False            # nnU-Net: mirroring test-time augmentation on (every window 2^axes times)


@dataclass
class Imported:
    """A foreign model made into an edgeseg model: ``model`` (eval mode) with ``spec``; ``source`` records the
    framework, what was read and each file's sha256; ``reference(path)`` runs the framework's own pipeline on one
    image file and returns its label map at the model's input size — at the image's own size when ``native``
    (None: the framework has no pipeline to compare with); ``notes`` say what was mapped how."""

    model: object
    spec: object
    source: dict
    reference: Callable[[Path], np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)
    native: bool = False


class Importer:
    """A framework's reader. Subclass it, set ``name`` (and ``family`` when it adds a model family), implement
    ``detect`` and ``load``, register it with :func:`~edgeseg.importers.register_importer`."""

    name: str = ""
    description: str = ""
    requires: tuple[str, ...] = ()     # Python modules it needs (``missing`` names the first one absent)
    extra: str = "frameworks"          # the edgeseg extra that installs them

    def missing(self) -> str | None:
        """Why this importer cannot run here (its framework is not installed), or None."""
        import importlib.util

        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        return (f"needs {', '.join(absent)} (pip install 'edgeseg[{self.extra}]')" if absent else None)

    def detect(self, source: Path, request: ImportRequest) -> bool:
        """Whether ``source`` (with ``request``) is this framework's saved model."""
        raise NotImplementedError

    def load(self, source: Path, request: ImportRequest) -> Imported:
        """The model, its spec and the framework's own pipeline; a one-line :class:`EdgesegError` for anything
        it cannot map."""
        raise NotImplementedError


def need_labels(request: ImportRequest, num_classes: int, where: str) -> list[str]:
    """The label names: the request's, checked against the network's output channels."""
    labels = request.labels
    if not labels:
        raise EdgesegError(f"{where}: the files do not name the labels; pass labels (background first, "
                           f"{num_classes} names)")
    if len(labels) != num_classes:
        raise EdgesegError(f"{where}: {len(labels)} label names for a network with {num_classes} output channels")
    return list(labels)
