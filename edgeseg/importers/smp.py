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
from edgeseg.validation import JSON_ERRORS, expect_int

MODEL_KEYS = ("_model_class", "_smp_model_class", "model_class")


def _config(folder: Path) -> dict | None:
    path = folder / "config.json"
    if not (path.is_file() and (folder / "model.safetensors").is_file()):
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, *JSON_ERRORS):
        return None
    return config if isinstance(config, dict) and any(k in config for k in MODEL_KEYS) else None


IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # torchvision's ImageNet statistics, input range 0–1


def _recorded_statistics(encoder: str) -> tuple[dict | None, str]:
    """The encoder's mean/std as smp records them, read from disk only: timm's pretrained config for ``tu-``
    encoders, else smp's hub config when already in the Hugging Face cache (edgeseg never downloads)."""
    from segmentation_models_pytorch.encoders import encoders

    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        return ((cfg.__dict__ if cfg is not None and getattr(cfg, "mean", None) else None), "timm's pretrained config")
    settings = (encoders.get(encoder) or {}).get("pretrained_settings", {}).get("imagenet") or {}
    if "mean" in settings:
        return settings, "smp's encoder settings"
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(settings["repo_id"], filename="config.json", revision=settings.get("revision"),
                               local_files_only=True)
        return json.loads(Path(path).read_text()), "smp's hub config (cached)"
    except Exception:  # not cached, or no hub settings: the caller says what it assumed
        return None, ""


def encoder_normalization(encoder: str, channels: int) -> tuple[list[float], list[float], str]:
    """The encoder's ImageNet mean/std scaled to 0–255 pixel values, and where they came from."""
    stats, where = _recorded_statistics(encoder)
    if stats is None:
        stats, where = {"mean": IMAGENET[0], "std": IMAGENET[1], "input_range": [0, 1]}, (
            "assumed: torchvision's ImageNet mean/std (smp's statistics for this encoder are not on disk)")
    scale = 255.0 if list(stats.get("input_range", [0, 1]))[1] == 1 else 1.0
    mean, std = [float(m) * scale for m in stats["mean"]], [float(s) * scale for s in stats["std"]]
    if len(mean) != channels:
        raise EdgesegError(f"smp encoder {encoder}: {len(mean)} ImageNet channels for a {channels}-channel input")
    return mean, std, where


@register_importer
class SmpImporter(Importer):
    name = "smp"
    description = "segmentation_models_pytorch save_pretrained folder: config.json + model.safetensors"
    requires = ("segmentation_models_pytorch",)
    extra = "smp"

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
        net_channels = expect_int(config.get("in_channels", 3), f"{source}/config.json: in_channels", 1, 64)
        num_classes = expect_int(config.get("classes", 1), f"{source}/config.json: classes", 1, 255)
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
            adapter["input_mean"], adapter["input_std"], where = encoder_normalization(kwargs["encoder_name"],
                                                                                      net_channels)
            notes.append(f"input normalization: {kwargs['encoder_name']}'s ImageNet mean/std over 0–255 pixels "
                         f"({where}; smp files do not record the normalization: pass normalization to override), "
                         "in the graph")
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
        reference = _Reference(model, adapter["input_mean"], adapter["input_std"], net_channels,
                               spec.preprocessing.size) if normalization == "imagenet" else None
        return Imported(model.eval(), spec, record, reference, notes)


class _Reference:
    """smp's way in, as its README does it: the image (gray repeated to RGB) scaled to 0–1 and normalized with
    the encoder's mean/std on the host, resized bilinearly (PyTorch), the bare network, argmax."""

    def __init__(self, model, mean: list[float], std: list[float], channels: int, size: tuple[int, ...]):
        self.model, self.channels, self.size = model, channels, size
        self.mean, self.std = np.asarray(mean) / 255.0, np.asarray(std) / 255.0

    def __call__(self, image_path: Path) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        from PIL import Image

        with Image.open(image_path) as im:
            hwc = np.asarray(im.convert("RGB") if self.channels == 3 else im, dtype=np.float32) / 255.0
        x = (hwc.reshape(*hwc.shape[:2], -1) - self.mean) / self.std
        x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        net = getattr(self.model, "net", self.model)
        with torch.inference_mode():
            return net(x).argmax(1)[0].numpy().astype(np.uint8)
