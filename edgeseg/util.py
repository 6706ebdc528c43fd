"""Small helpers every layer uses — file hashes, device-name slugs, JSON-safe values — kept below every other
edgeseg module (this one imports none), so runtime code needs neither ``checkpoint`` nor ``bench`` for them."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def slug(text: str) -> str:
    """``"NVIDIA Jetson AGX Orin"`` → ``"nvidia-jetson-agx-orin"``: a device name usable in file names."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def jsonable(value):
    """``value`` as strict JSON takes it: NaN and ±inf become None (JSON has neither), tuples lists, numpy
    scalars Python numbers, dict keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value
