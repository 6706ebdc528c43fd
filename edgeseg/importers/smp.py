"""segmentation_models_pytorch: networks by name (the ``smp:`` family: ``smp:Unet``, ``smp:FPN`` … with
``encoder_name``) and ``save_pretrained`` folders (``config.json`` + ``model.safetensors``). Encoder weights are
never downloaded: the file's weights are the model's. smp files do not record the input normalization; the
encoder's ImageNet mean/std over a 0–1 input range (smp's ``get_preprocessing_fn``) are assumed unless the
request names another normalization, and they run inside the graph."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.importers.base import Imported, Importer, ImportRequest, need_labels
from edgeseg.importers.registry import register_importer
from edgeseg.importers.weights import load_into, read_state_dict, source_files

MODEL_KEYS = ("_model_class", "_smp_model_class", "model_class")


def _config(folder: Path) -> dict | None:
    path = folder / "config.json"
    if not (path.is_file() and (folder / "model.safetensors").is_file()):
        return None
    try:
        config = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    return config if isinstance(config, dict) and any(k in config for k in MODEL_KEYS) else None


def encoder_normalization(encoder: str, channels: int) -> tuple[list[float], list[float]]:
    """The encoder's ImageNet mean/std for 0–255 pixel values (smp's ``get_preprocessing_params``, range 0–1)."""
    from segmentation_models_pytorch.encoders import get_preprocessing_params

    try:
        params = get_preprocessing_params(encoder, pretrained="imagenet")
    except (KeyError, ValueError):
        raise EdgesegError(f"smp encoder {encoder}: no ImageNet statistics recorded; pass normalization") from None
    scale = 255.0 if list(params.get("input_range", [0, 1]))[1] == 1 else 1.0
    mean, std = [m * scale for m in params["mean"]], [s * scale for s in params["std"]]
    if len(mean) != channels:
        raise EdgesegError(f"smp encoder {encoder}: {len(mean)} ImageNet channels for a {channels}-channel input")
    return mean, std


@register_importer
class SmpImporter(Importer):
    name = "smp"
    description = "segmentation_models_pytorch save_pretrained folder: config.json + model.safetensors"
    requires = ("segmentation_models_pytorch",)

    def detect(self, source: Path, request: ImportRequest) -> bool:
        return source.is_dir() and _config(source) is not None

    def load(self, source: Path, request: ImportRequest) -> Imported:
        from edgeseg.checkpoint import CheckpointSpec
        from edgeseg.data.preprocessing import PreprocessSpec
        from edgeseg.models import create_model

        config = _config(source)
        if config is None:
            raise EdgesegError(f"{source}: not an smp save_pretrained folder (config.json + model.safetensors)")
        arch = next(config[k] for k in MODEL_KEYS if k in config)
        kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k not in
                  ("model_class", "encoder_weights", "in_channels", "classes")}
        net_channels, num_classes = int(config.get("in_channels", 3)), int(config.get("classes", 1))
        if num_classes < 2:
            raise EdgesegError(f"{source}: {num_classes} output channel (sigmoid); edgeseg label maps need softmax over "
                               "≥ 2 classes")
        channels = request.channel_names or [f"ch{i}" for i in range(net_channels)]
        if len(channels) not in (1, net_channels):
            raise EdgesegError(f"{source}: {len(channels)} image channels for a {net_channels}-channel encoder")
        adapter, notes = {}, []
        if len(channels) != net_channels:
            adapter["input_repeat"] = net_channels
            notes.append(f"1-channel images repeated to the encoder's {net_channels} channels, in the graph")
        normalization = request.normalization or "imagenet"
        if normalization == "imagenet":
            adapter["input_mean"], adapter["input_std"] = encoder_normalization(kwargs["encoder_name"], net_channels)
            notes.append(f"input normalization: {kwargs['encoder_name']} ImageNet mean/std over 0–255 pixels (smp "
                         "files do not record it; pass normalization to override), in the graph")
        if not request.size:
            raise EdgesegError(f"{source}: smp files do not record the input size; pass size")
        model = create_model(f"smp:{arch}", len(channels), num_classes, **kwargs, **adapter)
        weights = source / "model.safetensors"
        load_into(model, read_state_dict(weights), weights)
        spec = CheckpointSpec(arch=f"smp:{arch}", arch_kwargs={**kwargs, **adapter}, in_channels=len(channels),
                              num_classes=num_classes, label_names=need_labels(request, num_classes, str(source)),
                              spatial_dims=2, preprocessing=PreprocessSpec(
                                  tuple(request.size), list(channels), clip_percentiles=None,
                                  normalization="none" if normalization == "imagenet" else normalization,
                                  window=request.window))
        record = {"framework": "smp", "kind": "save_pretrained", "network": arch,
                  "files": source_files(source, [source / "config.json", weights])}
        reference = _Reference(model, kwargs["encoder_name"], net_channels, spec.preprocessing.size) \
            if normalization == "imagenet" else None
        return Imported(model.eval(), spec, record, reference, notes)


class _Reference:
    """smp's own way in: the image (gray repeated to RGB) through ``get_preprocessing_fn(encoder, "imagenet")``,
    resized bilinearly (PyTorch), the bare network, argmax."""

    def __init__(self, model, encoder: str, channels: int, size: tuple[int, ...]):
        self.model, self.encoder, self.channels, self.size = model, encoder, channels, size

    def __call__(self, image_path: Path) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        from PIL import Image
        from segmentation_models_pytorch.encoders import get_preprocessing_fn

        with Image.open(image_path) as im:
            hwc = np.asarray(im.convert("RGB") if self.channels == 3 else im, dtype=np.float32) / 255.0
        x = get_preprocessing_fn(self.encoder, pretrained="imagenet")(hwc)
        x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        net = getattr(self.model, "net", self.model)
        with torch.inference_mode():
            return net(x).argmax(1)[0].numpy().astype(np.uint8)
