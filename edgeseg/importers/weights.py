"""Weights of a foreign model: read without running code (safetensors, or ``torch.load(weights_only=True)``),
loaded strictly into the network, and each file read recorded with its sha256."""
from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.util import file_sha256


def read_state_dict(path: Path) -> dict:
    """A state dict of tensors from ``.safetensors`` or a ``.pt/.pth`` pickle restricted to tensors."""
    if not path.is_file():
        raise EdgesegError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # a truncated or foreign file
            raise EdgesegError(f"{path}: unreadable safetensors file ({str(exc)[:120]})") from None
    from edgeseg.checkpoint import load_foreign_state_dict

    return load_foreign_state_dict(path)


def load_into(model, state: dict, path: Path) -> None:
    """Load ``state`` strictly into ``model`` (the framework's network inside an edgeseg adapter, if any); a
    mismatch names the first missing and unexpected keys and the first shape that differs."""
    net = getattr(model, "net", model)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []) + \
                ([f"shape of {shapes[0]}: {tuple(state[shapes[0]].shape)} in the file, "
                  f"{tuple(own[shapes[0]].shape)} in the network"] if shapes else [])
        raise EdgesegError(f"{path}: weights do not fit the network the config describes: {'; '.join(parts)}")
    net.load_state_dict(state, strict=True)


def source_files(root: Path, paths: list[Path]) -> dict[str, str]:
    """``{path relative to root: sha256}`` of the files an import read."""
    return {str(p.relative_to(root) if p.is_relative_to(root) else p.name): file_sha256(p) for p in paths}
