"""The edgeseg checkpoint: one safetensors file whose header metadata holds the JSON spec.

Nothing in it is pickled, so loading can never execute code. Foreign ``.pt/.pth`` state dicts are read
with ``torch.load(weights_only=True)``, which refuses pickles that would run code.
"""
from __future__ import annotations

import datetime as _dt
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.data.io import atomic_write
from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.errors import EdgesegError
from edgeseg.spec_checks import WIDTH_ATTRS, check_model_fields
from edgeseg.util import file_sha256, jsonable
from edgeseg.validation import JSON_ERRORS, expect_dict, expect_int

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
    def from_dict(cls, d: dict, field: str = "spec") -> "CheckpointSpec":
        """The spec from its JSON form, every field checked (one line naming a wrong one)."""
        expect_dict(d, field)
        if d.get("format") != FORMAT:
            raise EdgesegError(f"not an edgeseg checkpoint spec (format={str(d.get('format'))[:40]!r})")
        if expect_int(d.get("format_version", 1), f"{field}.format_version", 1, 10**6) > FORMAT_VERSION:
            raise EdgesegError(f"checkpoint format {d['format_version']} is newer than this edgeseg "
                               f"(reads up to {FORMAT_VERSION}); upgrade edgeseg")
        checked = check_model_fields(d, field)
        return cls(**{k: checked[k] for k in cls.__dataclass_fields__ if k in checked})

    @classmethod
    def from_manifest(cls, manifest: dict) -> "CheckpointSpec":
        """The spec a bundle manifest records: its ``model`` with its ``preprocessing``."""
        return cls.from_dict({**manifest["model"], "preprocessing": manifest["preprocessing"]})

    def build_model(self):
        from edgeseg.models import create_model

        return create_model(self.arch, self.in_channels, self.num_classes, **self.arch_kwargs)


def save_checkpoint(path: str | Path, model, spec: CheckpointSpec) -> Path:
    """Write weights + spec atomically to ``path`` (a ``.ckpt`` safetensors file).

    A pruned model's layer widths are recorded in the spec's ``pruning["structure"]``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    aliases = shared_names(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in aliases}
    d = spec.to_dict()
    d["pruning"] = {k: v for k, v in spec.pruning.items() if k != "structure"}
    structure = pruned_structure(model, spec.build_model())
    if structure["modules"] or structure["parameters"]:
        d["pruning"]["structure"] = structure
    meta = {_META_KEY: json.dumps({**d, "saved": _dt.datetime.now(_dt.timezone.utc).isoformat()})}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return path


_MAX_HEADER = 64 << 20  # a safetensors header beyond this is not a checkpoint of ours


def _safetensors_header(data: bytes, source) -> dict:
    """The JSON header of safetensors ``data`` (tensor name → dtype/shape/offsets, plus ``__metadata__``)."""
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 2 <= size <= min(_MAX_HEADER, len(data) - 8):
        raise EdgesegError(f"{source}: not a safetensors checkpoint (bad header length)")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except JSON_ERRORS as exc:  # invalid text or JSON, a number beyond the digit limit, nesting beyond recursion
        raise EdgesegError(f"{source}: not a safetensors checkpoint (header: {str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise EdgesegError(f"{source}: not a safetensors checkpoint (header is not an object)")
    return header


def _spec_from_header(header: dict, source) -> CheckpointSpec:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or _META_KEY not in meta:
        raise EdgesegError(f"{source}: safetensors file without an edgeseg spec; import it with `edgeseg import-weights`")
    try:
        d = json.loads(meta[_META_KEY])
    except (TypeError, *JSON_ERRORS) as exc:
        raise EdgesegError(f"{source}: the edgeseg spec is not valid JSON ({str(exc)[:120]})") from None
    try:
        return CheckpointSpec.from_dict(d)
    except EdgesegError as exc:
        raise EdgesegError(f"{source}: {exc}") from None


def read_checkpoint_bytes(path: str | Path) -> bytes:
    """The bytes of a checkpoint file (hash these and load these: what is hashed is what is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: checkpoint not found")
    return path.read_bytes()


def _read_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "checkpoint"
    return read_checkpoint_bytes(source), str(source)


def read_spec(path: str | Path) -> CheckpointSpec:
    """Read only the spec of a ``.ckpt`` (no weights, no torch needed)."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        data = head + f.read(size if 0 <= size <= _MAX_HEADER else 0)
    return _spec_from_header(_safetensors_header(data, path), path)


def load_checkpoint(source: str | Path | bytes, name: str | None = None):
    """Load ``(model, spec)`` from a ``.ckpt`` path or its bytes (``name`` names them in errors); the model is
    in eval mode on the CPU.

    The spec's model is first built without memory (on PyTorch's meta device) and its tensor shapes compared
    with the file's, so a spec that does not fit its weights (or would allocate far more than the file holds)
    is refused before anything is allocated."""
    from safetensors.torch import load as load_bytes

    data, source_name = _read_bytes(source, name)
    header = _safetensors_header(data, source_name)
    spec = _spec_from_header(header, source_name)
    shapes = {k: v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    _check_shapes(spec, shapes, source_name)
    try:
        state = load_bytes(data)
    except Exception as exc:  # safetensors raises its own error types for a truncated or damaged file
        raise EdgesegError(f"{source_name}: damaged safetensors data ({type(exc).__name__}: {exc})") from None
    model = spec.build_model()
    if spec.pruning.get("structure"):
        apply_structure(model, spec.pruning["structure"], state)
    _load_state(model, state, source_name)
    return model.eval(), spec


def _shape_model(spec: CheckpointSpec, source):
    """The spec's model without memory for its weights (on torch's meta device), or on the CPU when its constructor
    computes with tensors (MONAI's SwinUNETR calls ``.item()``, which a meta tensor cannot): ``(model, device)``."""
    import torch

    from edgeseg.models.registry import TooManyModules

    for device in ("meta", "cpu"):  # create_model turns any error of the constructor into an EdgesegError
        try:
            with torch.device(device):
                return spec.build_model(), device
        except EdgesegError as exc:  # the CPU build says whether the spec is at fault (e.g. a negative width)
            if device == "cpu" or isinstance(exc, TooManyModules):  # too many: the CPU would only take longer
                raise EdgesegError(f"{source}: the spec does not build a model ({exc})") from None


def _check_shapes(spec: CheckpointSpec, shapes: dict, source) -> None:
    """Refuse a spec whose model's state does not match the tensor shapes stored in the file."""
    import torch

    model, device = _shape_model(spec, source)
    with torch.device(device):
        if spec.pruning.get("structure"):
            meta_state = {k: torch.empty(s) for k, s in shapes.items()
                          if isinstance(s, list) and all(isinstance(n, int) and n >= 0 for n in s)}
            try:
                apply_structure(model, spec.pruning["structure"], meta_state)
            except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
                raise EdgesegError(f"{source}: malformed pruned structure in the spec ({type(exc).__name__}: "
                                   f"{str(exc)[:120]})") from None
    aliases = shared_names(model)
    expected = {k: list(v.shape) for k, v in model.state_dict().items() if k not in aliases}
    wrong = sorted(k for k in expected if k in shapes and shapes[k] != expected[k])
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if wrong or missing or unexpected:
        detail = (f"{wrong[0]} is {shapes[wrong[0]]} in the file, the spec builds {expected[wrong[0]]}" if wrong else
                  f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        raise EdgesegError(f"{source}: weights do not fit the architecture the spec describes ({detail})")


def pruned_structure(model, reference) -> dict:
    """Widths of ``model`` that differ from ``reference`` (the same architecture, unpruned):
    ``{"modules": {name: {attr: value}}, "parameters": {name: shape}}`` (parameters outside modules' own)."""
    ref_modules = dict(reference.named_modules())
    modules = {}
    for name, m in model.named_modules():
        ref = ref_modules.get(name)
        changed = {a: jsonable(getattr(m, a)) for a in WIDTH_ATTRS
                   if ref is not None and hasattr(m, a) and getattr(m, a) != getattr(ref, a)}
        if changed:
            modules[name] = changed
    ref_params = dict(reference.named_parameters())
    parameters = {name: list(p.shape) for name, p in model.named_parameters()
                  if name in ref_params and p.shape != ref_params[name].shape and name.rsplit(".", 1)[0] not in modules}
    return {"modules": modules, "parameters": parameters}


def apply_structure(model, structure: dict, state: dict) -> None:
    """Give ``model`` (freshly built) the pruned widths of ``structure``; tensors take their shapes from ``state``."""
    import torch

    named = dict(model.named_modules())
    for name, attrs in structure.get("modules", {}).items():
        if name not in named:
            raise EdgesegError(f"pruned structure names a module {name!r} that the architecture lacks")
        module = named[name]
        for attr, value in attrs.items():
            if attr not in WIDTH_ATTRS:  # the spec's check refuses it first; this guards specs built in code
                raise EdgesegError(f"pruned structure: {name}.{attr} is not a width structured pruning changes")
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


def shared_names(model) -> dict[str, str]:
    """State-dict names that reach a tensor already named earlier (a module registered under two names, as
    nnU-Net's decoder holds its encoder) → that first name; saved once, loaded into both."""
    first: dict[int, str] = {}
    aliases = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        aliases.update({name: first[id(tensor)]} if id(tensor) in first else {})
        first.setdefault(id(tensor), name)
    return aliases


def _load_state(model, state: dict, path) -> None:
    state = {**state, **{k: state[f] for k, f in shared_names(model).items() if f in state and k not in state}}
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
