"""MONAI's pre- and post-transforms mapped to edgeseg's preprocessing, one rule per transform; a transform with
no rule is refused by name. Dictionary (``…d``) and array forms map alike."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgeseg.errors import EdgesegError

IGNORED = {"EnsureType", "ToTensor", "CastToType", "EnsureChannelFirst", "AddChannel", "Invert", "SaveImage",
           "CopyItems", "DeleteItems", "Identity", "ToNumpy", "ToDevice"}
INTENSITY = {"ScaleIntensityRange", "NormalizeIntensity", "ScaleIntensity"}
MAPPED = {"LoadImage", "Resize", "Activations", "AsDiscrete", *INTENSITY, *IGNORED}
# the arguments each mapped transform may carry (beyond keys): any other one could change what it does (Resize's
# size_mode) or what it loads (LoadImage's reader names a class to import), so it is refused by name
_COMMON = {"_target_", "keys", "allow_missing_keys", "dtype"}
DTYPES = ("float32", "float16", "float64", "uint8", "int16", "int32", "int64")
ARGS = {"LoadImage": {"image_only", "reverse_indexing", "ensure_channel_first", "simple_keys"},
        "Resize": {"spatial_size", "mode", "align_corners", "anti_aliasing"},
        "ScaleIntensityRange": {"a_min", "a_max", "b_min", "b_max", "clip"},
        "NormalizeIntensity": {"subtrahend", "divisor", "nonzero", "channel_wise"},
        "ScaleIntensity": {"minv", "maxv", "factor", "channel_wise"},
        "Activations": {"softmax", "sigmoid", "other"}, "AsDiscrete": {"argmax", "to_onehot", "threshold", "rounding"},
        "EnsureType": {"data_type", "track_meta", "device", "wrap_sequence"}, "EnsureChannelFirst": {"channel_dim"},
        "CastToType": set(), "ToTensor": {"track_meta"}}


def check_args(spec: dict, name: str, where: str) -> None:
    """Refuse an argument the mapping of ``name`` does not read (one line naming it)."""
    allowed = _COMMON | ARGS.get(name, set())
    unknown = sorted(k for k in spec if k not in allowed)
    if unknown and name not in ("SaveImage", "Invert", "CopyItems", "DeleteItems", "Identity", "ToNumpy", "ToDevice",
                                "AddChannel"):
        raise EdgesegError(f"{where}: {name}({', '.join(f'{k}=…' for k in unknown)}) is not mapped; edgeseg maps "
                           f"{name} with {', '.join(sorted(ARGS.get(name, set()))) or 'no arguments'}")
    dtype = spec.get("dtype")
    if dtype is not None and str(dtype).removeprefix("torch.").removeprefix("np.") not in DTYPES:
        raise EdgesegError(f"{where}: {name}(dtype={str(dtype)[:40]!r}) is not mapped (one of {', '.join(DTYPES)})")
    if name == "Activations" and spec.get("other") is not None:
        raise EdgesegError(f"{where}: Activations(other=…) runs a callable; not mapped")


@dataclass
class Mapping:
    """What the transforms amount to: edgeseg preprocessing fields, the adapter's input steps, notes."""

    size: tuple[int, ...] | None = None
    normalization: str = "none"
    window: tuple[float, float] | None = None
    adapter: dict = field(default_factory=dict)
    reverse_axes: bool = False
    notes: list[str] = field(default_factory=list)


def transform_name(spec: dict, where: str) -> str:
    target = spec.get("_target_") if isinstance(spec, dict) else None
    if not isinstance(target, str):
        raise EdgesegError(f"{where}: expected an object with a _target_, got {type(spec).__name__}")
    name = target.rsplit(".", 1)[-1]
    return name[:-1] if name.endswith("d") and name[:-1] in MAPPED else name


def flatten(node: dict, where: str) -> list[dict]:
    """The transforms of a ``Compose`` (nested ones flattened), or the one transform ``node`` is."""
    if transform_name(node, where) == "Compose":
        out, transforms = [], node.get("transforms", [])
        if not isinstance(transforms, list):
            raise EdgesegError(f"{where}.transforms: expected a list, got {type(transforms).__name__}")
        for i, t in enumerate(transforms):
            out += flatten(t, f"{where}.transforms[{i}]")
        return out
    return [node]


def _pair(spec: dict, key: str, default):
    value = spec.get(key, default)
    return float(value) if value is not None else None


def _scale_intensity_range(spec: dict, m: Mapping, where: str) -> None:
    a_min, a_max = _pair(spec, "a_min", None), _pair(spec, "a_max", None)
    b_min, b_max = _pair(spec, "b_min", None), _pair(spec, "b_max", None)
    if None in (a_min, a_max) or a_max <= a_min:
        raise EdgesegError(f"{where}: ScaleIntensityRange needs a_min < a_max")
    b_min, b_max = (0.0 if b_min is None else b_min), (1.0 if b_max is None else b_max)
    if b_max == b_min:
        raise EdgesegError(f"{where}: ScaleIntensityRange with b_min == b_max maps every voxel to one value")
    if spec.get("clip", False):
        m.normalization, m.window = "ct_window", (a_min, a_max)  # clip to [a_min, a_max] → [0, 1]
        if (b_min, b_max) != (0.0, 1.0):  # then [0, 1] → [b_min, b_max], in the graph
            m.adapter.update(input_mean=[-b_min / (b_max - b_min)], input_std=[1.0 / (b_max - b_min)])
    else:
        s = (a_max - a_min) / (b_max - b_min)
        m.adapter.update(input_mean=[a_min - b_min * s], input_std=[s])


def _normalize_intensity(spec: dict, m: Mapping, in_channels: int, where: str) -> None:
    if spec.get("nonzero"):
        raise EdgesegError(f"{where}: NormalizeIntensity(nonzero=True) (statistics over non-zero voxels only) has no "
                           "edgeseg equivalent yet")
    sub, div = spec.get("subtrahend"), spec.get("divisor")
    if sub is not None or div is not None:
        if sub is None or div is None:
            raise EdgesegError(f"{where}: NormalizeIntensity with only one of subtrahend/divisor is not mapped")
        as_list = (lambda v: [float(x) for x in v] if isinstance(v, list) else [float(v)])
        m.adapter.update(input_mean=as_list(sub), input_std=as_list(div))
    elif in_channels == 1 or spec.get("channel_wise"):
        m.normalization = "zscore"
    else:
        raise EdgesegError(f"{where}: NormalizeIntensity over all {in_channels} channels at once (channel_wise=False) "
                           "is not mapped; edgeseg normalizes each channel")


def _scale_intensity(spec: dict, m: Mapping, in_channels: int, where: str) -> None:
    if (spec.get("minv", 0.0), spec.get("maxv", 1.0)) != (0.0, 1.0) or spec.get("factor") is not None:
        raise EdgesegError(f"{where}: ScaleIntensity is mapped for minv=0, maxv=1 only")
    if in_channels > 1 and not spec.get("channel_wise"):
        raise EdgesegError(f"{where}: ScaleIntensity over all channels at once is not mapped")
    m.normalization = "minmax"


def map_preprocessing(transforms: list[dict], dims: int, in_channels: int, where: str) -> Mapping:
    """The :class:`Mapping` of MONAI pre-transforms (refusing what edgeseg cannot reproduce)."""
    m = Mapping()
    intensity = []
    for i, spec in enumerate(transforms):
        here, name = f"{where}[{i}]", transform_name(spec, f"{where}[{i}]")
        check_args(spec, name, here)
        if name == "LoadImage":
            # MONAI's PIL and ITK readers index a 2D image (x, y): the network saw PNGs transposed
            m.reverse_axes = dims == 2 and spec.get("reverse_indexing", True) is not False
        elif name == "Resize":
            size = spec.get("spatial_size")
            if not (isinstance(size, list) and len(size) == dims and all(isinstance(s, int) and s > 0 for s in size)):
                raise EdgesegError(f"{here}: Resize.spatial_size must list {dims} positive sides")
            if spec.get("mode", "area") not in ("bilinear", "trilinear", "linear"):
                raise EdgesegError(f"{here}: Resize(mode={spec.get('mode', 'area')!r}) is not mapped; edgeseg resizes "
                                   "images linearly (mode='bilinear')")
            if spec.get("anti_aliasing"):
                raise EdgesegError(f"{here}: Resize(anti_aliasing=True) is not mapped")
            m.size = tuple(size)
        elif name in INTENSITY:
            intensity.append(name)
            if len(intensity) > 1:
                raise EdgesegError(f"{here}: two intensity transforms ({', '.join(intensity)}); edgeseg maps one")
            if name == "ScaleIntensityRange":
                _scale_intensity_range(spec, m, here)
            elif name == "NormalizeIntensity":
                _normalize_intensity(spec, m, in_channels, here)
            else:
                _scale_intensity(spec, m, in_channels, here)
        elif name not in IGNORED:
            raise EdgesegError(f"{here}: MONAI transform {name} has no edgeseg mapping yet (mapped: "
                               f"{', '.join(sorted(MAPPED - IGNORED))})")
    if m.adapter.get("input_mean") and len(m.adapter["input_mean"]) not in (1, in_channels):
        raise EdgesegError(f"{where}: {len(m.adapter['input_mean'])} intensity values for {in_channels} channels")
    if m.adapter.get("input_mean") and len(m.adapter["input_mean"]) == 1 and in_channels > 1:
        m.adapter.update(input_mean=m.adapter["input_mean"] * in_channels, input_std=m.adapter["input_std"] * in_channels)
    m.notes.append(f"intensity: {intensity[0] if intensity else 'none'} → normalization {m.normalization}"
                   + (" + fixed mean/std in the graph" if m.adapter else ""))
    if m.reverse_axes:
        m.notes.append("2D images: MONAI's reader indexes them (x, y); the network's axes are swapped in the graph")
    return m


def check_postprocessing(transforms: list[dict], where: str) -> None:
    """Softmax + argmax (or either alone) is what edgeseg's label map does; anything else is refused."""
    for i, spec in enumerate(transforms):
        here, name = f"{where}[{i}]", transform_name(spec, f"{where}[{i}]")
        check_args(spec, name, here)
        if name == "Activations" and spec.get("sigmoid"):
            raise EdgesegError(f"{here}: sigmoid outputs (one channel per overlapping label) are not mapped; edgeseg "
                               "label maps are softmax/argmax")
        if name == "AsDiscrete" and spec.get("threshold") is not None:
            raise EdgesegError(f"{here}: AsDiscrete(threshold=…) is not mapped; edgeseg takes the argmax")
        if name not in MAPPED:
            raise EdgesegError(f"{here}: MONAI post-transform {name} has no edgeseg mapping yet")
