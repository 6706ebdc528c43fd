"""A state dict (``.pt/.pth/.safetensors``) for a network named with ``arch`` — ``monai:SwinUNETR``, ``smp:Unet``
or one of edgeseg's own — and ``arch_kwargs``; the preprocessing is the request's (the file does not say)."""
from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.importers.base import Imported, Importer, ImportRequest, need_labels
from edgeseg.importers.registry import register_importer
from edgeseg.importers.weights import load_into, read_state_dict, source_files

SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


@register_importer
class StateDictImporter(Importer):
    name = "state-dict"
    description = "a state dict file with --arch FAMILY:NAME (monai:…, smp:…) or an edgeseg architecture"

    def detect(self, source: Path, request: ImportRequest) -> bool:
        return source.is_file() and source.suffix in SUFFIXES and bool(request.arch)

    def load(self, source: Path, request: ImportRequest) -> Imported:
        from edgeseg.checkpoint import CheckpointSpec
        from edgeseg.data.preprocessing import PreprocessSpec
        from edgeseg.models import create_model

        if not request.arch:
            raise EdgesegError(f"{source}: a state dict does not say its network; pass arch (e.g. monai:UNet)")
        if not request.size:
            raise EdgesegError(f"{source}: pass size (the model's input size)")
        if not request.labels:
            raise EdgesegError(f"{source}: pass labels (background first) or data with a dataset.json")
        channels = request.channel_names or ["ch0"]
        dims = len(request.size)
        kwargs = dict(request.arch_kwargs)
        if request.arch.startswith("monai:"):
            kwargs.setdefault("spatial_dims", dims)
        model = create_model(request.arch, len(channels), len(request.labels), **kwargs)
        load_into(model, read_state_dict(source), source)
        spec = CheckpointSpec(arch=request.arch, arch_kwargs=kwargs, in_channels=len(channels),
                              num_classes=len(request.labels),
                              label_names=need_labels(request, len(request.labels), str(source)), spatial_dims=dims,
                              preprocessing=PreprocessSpec(tuple(request.size), list(channels),
                                                           normalization=request.normalization or "zscore",
                                                           window=request.window))
        record = {"framework": request.arch.partition(":")[0] if ":" in request.arch else "edgeseg",
                  "kind": "state_dict", "network": request.arch, "files": source_files(source.parent, [source])}
        return Imported(model.eval(), spec, record, None,
                        [f"preprocessing as given: {spec.preprocessing.normalization}, size {list(request.size)}"])
