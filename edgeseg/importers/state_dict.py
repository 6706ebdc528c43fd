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
        normalization, notes = request.normalization or "zscore", []
        if request.arch.startswith("smp:") and not request.normalization and "input_mean" not in kwargs:
            normalization, note = "none", _smp_statistics(kwargs, len(channels), source)
            notes.append(note)
        model = create_model(request.arch, len(channels), len(request.labels), **kwargs)
        load_into(model, read_state_dict(source), source)
        spec = CheckpointSpec(arch=request.arch, arch_kwargs=kwargs, in_channels=len(channels),
                              num_classes=len(request.labels),
                              label_names=need_labels(request, len(request.labels), str(source)), spatial_dims=dims,
                              preprocessing=PreprocessSpec(tuple(request.size), list(channels),
                                                           normalization=normalization, window=request.window,
                                                           clip_percentiles=None if normalization == "none"
                                                           else (0.5, 99.5)))
        record = {"framework": request.arch.partition(":")[0] if ":" in request.arch else "edgeseg",
                  "kind": "state_dict", "network": request.arch, "files": source_files(source.parent, [source])}
        return Imported(model.eval(), spec, record, None,
                        [f"preprocessing: {spec.preprocessing.normalization}, size {list(request.size)}", *notes])


def _smp_statistics(kwargs: dict, channels: int, source: Path) -> str:
    """An smp encoder's ImageNet mean/std put in the graph (what the smp folder import assumes too); the note."""
    from edgeseg.importers.smp import encoder_normalization

    if "encoder_name" not in kwargs:
        raise EdgesegError(f"{source}: an smp network needs --arch-arg encoder_name=…")
    kwargs["input_mean"], kwargs["input_std"], where = encoder_normalization(kwargs["encoder_name"],
                                                                            kwargs.get("input_repeat") or channels)
    return (f"input normalization: {kwargs['encoder_name']}'s ImageNet mean/std over 0–255 pixels ({where}), in the "
            "graph; pass normalization to override")
