"""MONAI: networks by name (the ``monai:`` model family: ``monai:UNet``, ``monai:SwinUNETR`` …) and MONAI bundle
folders (``configs/inference.json|yaml`` + ``models/model.pt``), read as data: the network from ``network_def``,
the preprocessing from the pre-transforms (:mod:`.monai_transforms`), the labels from ``metadata.json``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.importers.base import Imported, Importer, ImportRequest, need_labels
from edgeseg.importers.config_refs import read_config, resolve
from edgeseg.importers.monai_transforms import check_postprocessing, flatten, map_preprocessing, transform_name
from edgeseg.importers.registry import register_importer
from edgeseg.importers.weights import load_into, read_state_dict, source_files

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
INFERERS = ("SimpleInferer", "SlidingWindowInferer")


def _bundle_config(folder: Path) -> Path | None:
    return next((folder / "configs" / n for n in CONFIG_NAMES if (folder / "configs" / n).is_file()), None)


def _weights(folder: Path) -> Path:
    for name in ("model.safetensors", "model.pt", "model.pth"):
        if (folder / "models" / name).is_file():
            return folder / "models" / name
    raise EdgesegError(f"{folder}: a MONAI bundle without models/model.pt (or .safetensors)")


def _labels(folder: Path, num_classes: int, request: ImportRequest) -> list[str]:
    """``metadata.json``'s ``network_data_format.outputs.pred.channel_def``, else the request's."""
    meta = folder / "configs" / "metadata.json"
    if meta.is_file() and not request.labels:
        data_format = read_config(meta).get("network_data_format")
        outputs = data_format.get("outputs") if isinstance(data_format, dict) else None
        outputs = outputs if isinstance(outputs, dict) else {}
        channels = next((o.get("channel_def") for o in outputs.values() if isinstance(o, dict)), None)
        if isinstance(channels, dict) and len(channels) == num_classes:
            return [str(channels.get(str(i), channels.get(i, f"label{i}"))) for i in range(num_classes)]
    return need_labels(request, num_classes, str(folder))


def _network_ints(kwargs: dict, name: str, where: str) -> tuple[int, int, int]:
    """``(spatial_dims, in_channels, out_channels)`` of a resolved ``network_def`` (the channels popped from
    ``kwargs``), each a plain integer of a usable size."""
    from edgeseg.validation import expect_int

    for key in ("in_channels", "out_channels"):
        if key not in kwargs:
            raise EdgesegError(f"{where}: no {key}; edgeseg needs the network's channel counts")
    dims = expect_int(kwargs.get("spatial_dims", 3 if name in ("UNETR", "SwinUNETR") else 2),
                      f"{where}.spatial_dims", 1, 3)
    return (dims, expect_int(kwargs.pop("in_channels"), f"{where}.in_channels", 1, 64),
            expect_int(kwargs.pop("out_channels"), f"{where}.out_channels", 2, 255))


@register_importer
class MonaiBundleImporter(Importer):
    name = "monai"
    description = "MONAI bundle folder: configs/inference.json|yaml + models/model.pt"
    requires = ("monai",)
    extra = "monai"

    def detect(self, source: Path, request: ImportRequest) -> bool:
        return source.is_dir() and _bundle_config(source) is not None

    def load(self, source: Path, request: ImportRequest) -> Imported:
        from edgeseg.checkpoint import CheckpointSpec
        from edgeseg.data.preprocessing import PreprocessSpec
        from edgeseg.models import create_model

        path = _bundle_config(source)
        config = read_config(path) if path is not None else {}
        if "network_def" not in config:
            raise EdgesegError(f"{source}: no configs/inference.json with a network_def")
        net = resolve(config, config["network_def"], f"{path.name}: network_def")
        name = transform_name(net, f"{path.name}: network_def")
        kwargs = {k: v for k, v in net.items() if k != "_target_"}
        dims, in_channels, num_classes = _network_ints(kwargs, name, f"{path.name}: network_def")
        if dims != 2:
            raise EdgesegError(f"{source}: a {dims}D MONAI bundle; edgeseg imports 2D bundles so far (3D: "
                               "Orientation/Spacing resampling are not mapped yet)")
        pre = flatten(resolve(config, config.get("preprocessing", {"_target_": "Compose"}), "preprocessing"),
                      "preprocessing")
        mapping = map_preprocessing(pre, dims, in_channels, f"{path.name}: preprocessing")
        post = flatten(resolve(config, config.get("postprocessing", {"_target_": "Compose"}), "postprocessing"),
                       "postprocessing")
        check_postprocessing(post, f"{path.name}: postprocessing")
        size = self._size(config, mapping, path)
        arch_kwargs = {**kwargs, **mapping.adapter, **({"reverse_axes": True} if mapping.reverse_axes else {})}
        model = create_model(f"monai:{name}", in_channels, num_classes, **arch_kwargs)
        weights = _weights(source)
        load_into(model, read_state_dict(weights), weights)
        labels = _labels(source, num_classes, request)
        spec = CheckpointSpec(arch=f"monai:{name}", arch_kwargs=arch_kwargs, in_channels=in_channels,
                              num_classes=num_classes, label_names=labels, spatial_dims=dims,
                              preprocessing=PreprocessSpec(size, request.channel_names or
                                                           [f"ch{i}" for i in range(in_channels)],
                                                           normalization=mapping.normalization, window=mapping.window,
                                                           clip_percentiles=None))
        record = {"framework": "monai", "kind": "bundle", "files": source_files(source, [path, weights]),
                  "network": name}
        return Imported(model.eval(), spec, record, _Pipeline(pre, model, mapping.reverse_axes), mapping.notes)

    def _size(self, config: dict, mapping, path: Path) -> tuple[int, ...]:
        inferer = resolve(config, config.get("inferer", {"_target_": "SimpleInferer"}), "inferer")
        kind = transform_name(inferer, "inferer")
        if kind not in INFERERS:
            raise EdgesegError(f"{path.name}: inferer {kind} is not mapped ({', '.join(INFERERS)})")
        size = mapping.size
        if kind == "SlidingWindowInferer":
            roi = tuple(inferer.get("roi_size") or ())
            if size is None or roi != size:
                raise EdgesegError(f"{path.name}: a 2D sliding window (roi_size {list(roi)}) over images not resized "
                                   "to it is not mapped; edgeseg feeds 2D models the whole resized image")
        if size is None:
            raise EdgesegError(f"{path.name}: the preprocessing has no Resize; edgeseg needs the model's input size")
        return tuple(reversed(size)) if mapping.reverse_axes else size


class _Pipeline:
    """MONAI's own pre-transforms (the mapped ones, built by name from the config's literal arguments) and the
    network as MONAI runs it: the reference an import is checked against."""

    def __init__(self, transforms: list[dict], model, reverse_axes: bool):
        self.specs, self.model, self.reverse_axes = transforms, model, reverse_axes

    def _compose(self):
        import monai.transforms as mt

        steps = []
        for spec in self.specs:
            target = spec["_target_"].rsplit(".", 1)[-1]
            name = target[:-1] if target.endswith("d") else target  # the array form: one image, no keys
            if name in ("SaveImage", "Invert", "CopyItems", "DeleteItems"):
                continue
            steps.append(getattr(mt, name)(**{k: v for k, v in spec.items()
                                               if k not in ("_target_", "keys", "allow_missing_keys")}))
        return mt.Compose(steps)

    def __call__(self, image_path: Path) -> np.ndarray:
        import torch

        x = self._compose()(str(image_path))
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)[None]
        net = getattr(self.model, "net", self.model)  # the bare MONAI network, fed MONAI's own tensor
        with torch.inference_mode():
            labels = net(x).argmax(1)[0].numpy().astype(np.uint8)
        return labels.T if self.reverse_axes else labels
