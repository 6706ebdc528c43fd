"""The edgeseg checkpoint: one safetensors file whose header metadata holds the JSON spec.

Nothing in it is pickled, so loading can never execute code. Foreign ``.pt/.pth`` state dicts are read
with ``torch.load(weights_only=True)``, which refuses pickles that would run code.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from .data.io import atomic_write
from .data.preprocessing import PreprocessSpec
from .errors import EdgesegError

FORMAT = "edgeseg-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "edgeseg"


@dataclass
class CheckpointSpec:
    """Everything needed to rebuild, feed and judge the model, apart from the weights."""

    arch: str
    arch_kwargs: dict
    in_channels: int
    num_classes: int
    label_names: list[str]
    preprocessing: PreprocessSpec
    spatial_dims: int = 2
    data: dict = field(default_factory=dict)  # dataset name, fingerprint, train/val case ids
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    # structured pruning: "structure" (widths that differ from the architecture's defaults, filled in by
    # save_checkpoint) and whatever the pruning run reports (ratio, MACs, fine-tune)
    pruning: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["preprocessing"] = self.preprocessing.to_dict()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "CheckpointSpec":
        if d.get("format") != FORMAT:
            raise EdgesegError(f"not an edgeseg checkpoint spec (format={d.get('format')!r})")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise EdgesegError(f"checkpoint format {d['format_version']} is newer than this edgeseg "
                               f"(reads up to {FORMAT_VERSION}); upgrade edgeseg")
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["preprocessing"] = PreprocessSpec.from_dict(d["preprocessing"])
        return cls(**fields)

    def build_model(self):
        from .models import create_model

        return create_model(self.arch, self.in_channels, self.num_classes, **self.arch_kwargs)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model, spec: CheckpointSpec) -> Path:
    """Write weights + spec atomically to ``path`` (a ``.ckpt`` safetensors file).

    A pruned model's layer widths are recorded in the spec's ``pruning["structure"]``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    d = spec.to_dict()
    d["pruning"] = {k: v for k, v in spec.pruning.items() if k != "structure"}
    structure = pruned_structure(model, spec.build_model())
    if structure["modules"] or structure["parameters"]:
        d["pruning"]["structure"] = structure
    meta = {_META_KEY: json.dumps({**d, "saved": _dt.datetime.now(_dt.timezone.utc).isoformat()})}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return path


def read_spec(path: str | Path) -> CheckpointSpec:
    """Read only the spec of a ``.ckpt`` (no weights, no torch needed)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise EdgesegError(f"{path}: not a safetensors checkpoint ({exc})") from None
    if _META_KEY not in meta:
        raise EdgesegError(f"{path}: safetensors file without an edgeseg spec; import it with `edgeseg import-weights`")
    return CheckpointSpec.from_dict(json.loads(meta[_META_KEY]))


def load_checkpoint(path: str | Path):
    """Load ``(model, spec)`` from a ``.ckpt``; the model is in eval mode on the CPU."""
    from safetensors.torch import load_file

    spec = read_spec(path)
    model = spec.build_model()
    state = load_file(str(path))
    if spec.pruning.get("structure"):
        apply_structure(model, spec.pruning["structure"], state)
    _load_state(model, state, path)
    return model.eval(), spec


# Module attributes that structured pruning changes (MultiHeadAttention keeps num_heads/head_dim).
_WIDTH_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features", "normalized_shape",
                "num_heads", "head_dim")


def pruned_structure(model, reference) -> dict:
    """Widths of ``model`` that differ from ``reference`` (the same architecture, unpruned):
    ``{"modules": {name: {attr: value}}, "parameters": {name: shape}}`` (parameters outside modules' own)."""
    ref_modules = dict(reference.named_modules())
    modules = {}
    for name, m in model.named_modules():
        ref = ref_modules.get(name)
        changed = {a: _jsonable(getattr(m, a)) for a in _WIDTH_ATTRS
                   if ref is not None and hasattr(m, a) and getattr(m, a) != getattr(ref, a)}
        if changed:
            modules[name] = changed
    ref_params = dict(reference.named_parameters())
    parameters = {name: list(p.shape) for name, p in model.named_parameters()
                  if name in ref_params and p.shape != ref_params[name].shape and name.rsplit(".", 1)[0] not in modules}
    return {"modules": modules, "parameters": parameters}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def apply_structure(model, structure: dict, state: dict) -> None:
    """Give ``model`` (freshly built) the pruned widths of ``structure``; tensors take their shapes from ``state``."""
    import torch

    named = dict(model.named_modules())
    for name, attrs in structure.get("modules", {}).items():
        if name not in named:
            raise EdgesegError(f"pruned structure names a module {name!r} that the architecture lacks")
        module = named[name]
        for attr, value in attrs.items():
            setattr(module, attr, tuple(value) if attr == "normalized_shape" else value)
        for key, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            full = f"{name}.{key}" if name else key
            if tensor is not None and full in state and state[full].shape != tensor.shape:
                new = torch.empty(state[full].shape, dtype=tensor.dtype)
                if key in module._parameters:
                    module._parameters[key] = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)
                else:
                    module._buffers[key] = new
    for name, shape in structure.get("parameters", {}).items():
        owner_name, _, key = name.rpartition(".")
        owner = named[owner_name]
        owner._parameters[key] = torch.nn.Parameter(torch.empty(shape))


def _load_state(model, state: dict, path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgesegError(f"{path}: weights do not fit the architecture "
                           f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                           f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")


def load_foreign_state_dict(path: str | Path) -> dict:
    """Read a PyTorch ``.pt/.pth`` state dict safely; pickles that would run code are refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgesegError(f"{path}: refused: this pickle would execute code or build non-tensor objects "
                           f"({first[:160]}); only plain state dicts are accepted") from None
    except Exception as exc:
        raise EdgesegError(f"{path}: unreadable PyTorch file ({type(exc).__name__}: {str(exc)[:160]})") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgesegError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def import_weights(path: str | Path, spec: CheckpointSpec, out: str | Path) -> Path:
    """Turn a foreign state dict plus a spec (arch, channels, preprocessing) into a ``.ckpt``."""
    model = spec.build_model()
    _load_state(model, load_foreign_state_dict(path), path)
    spec.training = {**spec.training, "imported_from": Path(path).name, "imported_sha256": file_sha256(path)}
    return save_checkpoint(out, model, spec)
