"""Replacing an existing output file: only one edgeseg wrote, and only when asked (``--force``).

Every file edgeseg writes says so: JSON results carry ``"schema": "edgeseg-…"`` (or ``"format"``),
calibration sets and checkpoints carry their edgeseg manifest/spec, Markdown reports and JUnit files name
edgeseg in their first lines, PNG plots carry the ``Software: edgeseg`` text chunk. A file that does not
is never replaced, whatever the flags.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import EdgesegError

PNG_SOFTWARE = "edgeseg"  # the PNG text chunk edgeseg's plots carry (matplotlib ``metadata={"Software": …}``)
_HEAD = 2048


def _json_is_ours(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    tag = data.get("schema", data.get("format")) if isinstance(data, dict) else None
    return isinstance(tag, str) and tag.startswith("edgeseg")


def _head_names_us(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"edgeseg" in f.read(_HEAD)


def _png_is_ours(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return str(im.info.get("Software", "")).startswith(PNG_SOFTWARE)
    except Exception:  # not an image PIL can open
        return False


def _checkpoint_is_ours(path: Path) -> bool:
    from .checkpoint import read_spec

    try:
        return bool(read_spec(path).arch)
    except EdgesegError:
        return False


def _calibration_is_ours(path: Path) -> bool:
    from .calibration import load_calibration

    try:
        return load_calibration(path) is not None
    except EdgesegError:
        return False


_RECOGNISERS = {".json": _json_is_ours, ".md": _head_names_us, ".xml": _head_names_us, ".png": _png_is_ours,
                ".ckpt": _checkpoint_is_ours, ".npz": _calibration_is_ours}


def written_by_edgeseg(path: str | Path) -> bool:
    """Whether an existing regular file is recognisably one edgeseg wrote (by its content, not its name)."""
    path = Path(path)
    recognise = _RECOGNISERS.get(path.suffix.lower())
    return recognise is not None and path.is_file() and not path.is_symlink() and recognise(path)


def check_overwrite(*paths: str | Path, force: bool) -> None:
    """Refuse to write over an existing path unless edgeseg wrote it and ``force`` is given."""
    for path in map(Path, paths):
        if not (path.exists() or path.is_symlink()):
            continue
        if not written_by_edgeseg(path):
            raise EdgesegError(f"{path}: exists and was not written by edgeseg; it is never replaced, whatever the "
                               "flags: choose another path")
        if not force:
            raise EdgesegError(f"{path}: exists (an earlier edgeseg output); pass --force to replace it")
