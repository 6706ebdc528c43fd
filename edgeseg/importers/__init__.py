"""Foreign models in: one importer per framework, registered like targets (``register_importer``), each reading
that framework's saved model into an edgeseg checkpoint — the network (its family in :mod:`edgeseg.models`), the
preprocessing its own pipeline applied, and a check against that pipeline. :func:`import_model` is the one call."""
from __future__ import annotations

from edgeseg.importers import monai, nnunet, smp, state_dict  # noqa: F401  (they register themselves)
from edgeseg.importers.base import Imported, Importer, ImportRequest
from edgeseg.importers.convert import import_model, is_foreign
from edgeseg.importers.registry import find_importer, get_importer, importer_names, register_importer

__all__ = ["ImportRequest", "Imported", "Importer", "find_importer", "get_importer", "import_model", "importer_names",
           "is_foreign", "register_importer"]
