"""Reading a framework's JSON/YAML config as data: ``@id`` references resolved, never evaluated. MONAI bundle
configs may hold ``$`` Python expressions and ``%`` macros; running them would run the file's code, so a
value that needs one is refused with the key that holds it."""
from __future__ import annotations

import json
from pathlib import Path

from edgeseg.errors import EdgesegError

MAX_DEPTH = 32
MAX_NODES = 100_000  # values a resolved config may hold: references can multiply a small file (a "billion laughs")


def read_config(path: Path) -> dict:
    """A JSON or YAML (``yaml.safe_load``) mapping."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # unreadable, not UTF-8, json/yaml errors: the file is the user's
        raise EdgesegError(f"{path}: unreadable config ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise EdgesegError(f"{path}: a config must be a mapping")
    return data


def lookup(config: dict, ref: str, where: str):
    """The raw value at ``ref`` (``a::b::0`` or ``a#b#0``)."""
    node = config
    for part in ref.replace("#", "::").split("::"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise EdgesegError(f"{where}: reference @{ref[:80]} names nothing in the config")
    return node


def resolve(config: dict, value, where: str):
    """``value`` with every ``@id`` replaced by what it names, recursively; ``$``/``%`` values refused, and so
    are references nested deeper than ``MAX_DEPTH`` or expanding to more than ``MAX_NODES`` values."""
    return _resolve(config, value, where, 0, [0])


def _resolve(config: dict, value, where: str, depth: int, nodes: list[int]):
    nodes[0] += 1
    if nodes[0] > MAX_NODES:
        raise EdgesegError(f"{where.split(' → ')[0]}: its references expand to more than {MAX_NODES} values (a "
                           "reference bomb?); not a network config")
    if depth > MAX_DEPTH:
        raise EdgesegError(f"{where}: references nested deeper than {MAX_DEPTH} (a cycle?)")
    if isinstance(value, str):
        if value.startswith("@"):
            return _resolve(config, lookup(config, value[1:], where), f"{where} → {value[:80]}", depth + 1, nodes)
        if value.startswith(("$", "%")):
            raise EdgesegError(f"{where}: {value[:60]!r} is a Python expression or macro; edgeseg reads configs as "
                               "data and never runs them: replace it with its value")
        return value
    if isinstance(value, list):
        return [_resolve(config, v, f"{where}[{i}]", depth + 1, nodes) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _resolve(config, v, f"{where}.{k}", depth + 1, nodes) for k, v in value.items()}
    return value
