"""Replacing an existing output: only one edgeseg wrote, and only when asked (``--force``).

The one rule (:func:`check_replace`), for every output edgeseg writes: a path that is free is written; one
that holds something edgeseg cannot recognise as its own output is refused whatever the flags; an output of
ours is replaced only with ``force``. What "ours" means is the caller's adapter: a single file
(:func:`check_overwrite`, by content: JSON results carry ``"schema": "edgeseg-…"`` (or ``"format"``),
calibration sets and checkpoints carry their edgeseg manifest/spec, Markdown reports begin with the title
edgeseg gives them (``# edgeseg bench: …``), JUnit files are ``<testsuites name="edgeseg-…">``, PNG plots carry
the ``Software: edgeseg`` text chunk; a file that merely mentions edgeseg is not ours), a bundle folder
(:func:`edgeseg.bundle.check_replaceable`), an ``infer`` output listed in its folder's ledger
(:mod:`edgeseg.infer.outputs`), a JSON document of one schema (:func:`json_schema_is`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from edgeseg.errors import EdgesegError

PNG_SOFTWARE = "edgeseg"  # the PNG text chunk edgeseg's plots carry (matplotlib ``metadata={"Software": …}``)
_HEAD = 2048
_MAX_XML = 64 << 20
_MARKDOWN_TITLE = re.compile(rb"# edgeseg (bench|explain): ")
EARLIER_OUTPUT = "exists (an earlier edgeseg output)"


def check_replace(path: str | Path, force: bool, foreign: Callable[[Path], str | None],
                  ours: str = EARLIER_OUTPUT) -> None:
    """The one rule for writing where something may exist. Nothing at ``path``: free. ``foreign(path)`` returns
    why what is there is not an output edgeseg may replace (refused, whatever ``force``), or None when it is
    ours: then it is replaced only with ``force`` (the refusal reads ``"{path}: {ours}; pass --force …"``)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if (why := foreign(path)) is not None:
        raise EdgesegError(f"{path}: {why}")
    if not force:
        raise EdgesegError(f"{path}: {ours}; pass --force to replace it")


def json_object(path: Path, follow_links: bool = False) -> dict | None:
    """The JSON object in a regular file (a link only with ``follow_links``), else None: missing, unreadable,
    not JSON, not an object."""
    if not path.is_file() or (path.is_symlink() and not follow_links):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also > 4300 digits
        return None
    return data if isinstance(data, dict) else None


def _tag_is_ours(data: dict | None) -> bool:
    tag = data.get("schema", data.get("format")) if data is not None else None
    return isinstance(tag, str) and tag.startswith("edgeseg")


def _json_is_ours(path: Path) -> bool:
    return _tag_is_ours(json_object(path))


def _markdown_is_ours(path: Path) -> bool:
    """A report edgeseg wrote: its first line is the title edgeseg gives its reports."""
    with open(path, "rb") as f:
        return _MARKDOWN_TITLE.match(f.read(_HEAD).split(b"\n", 1)[0]) is not None


def _junit_is_ours(path: Path) -> bool:
    """A JUnit file edgeseg wrote (:mod:`edgeseg.gating.junit`): root ``<testsuites name="edgeseg-…">``."""
    import xml.etree.ElementTree as ET

    if not path.is_file() or path.is_symlink() or path.stat().st_size > _MAX_XML:
        return False
    data = path.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # never expand entities of a file we only inspect
        return False
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return False
    return root.tag == "testsuites" and str(root.get("name", "")).startswith("edgeseg-")


def _png_is_ours(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return str(im.info.get("Software", "")).startswith(PNG_SOFTWARE)
    except Exception:  # not an image PIL can open
        return False


def _checkpoint_is_ours(path: Path) -> bool:
    from edgeseg.checkpoint import read_spec

    try:
        return bool(read_spec(path).arch)
    except EdgesegError:
        return False


def _calibration_is_ours(path: Path) -> bool:
    """A calibration set (:func:`edgeseg.calibration.save_calibration`): an ``.npz`` whose ``manifest`` member is
    an edgeseg JSON object (read without pickle; the arrays are not loaded)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return _tag_is_ours(json.loads(str(data["manifest"])))
    except Exception:  # not an npz, no manifest, not JSON, not an object
        return False


_RECOGNISERS = {".json": _json_is_ours, ".md": _markdown_is_ours, ".xml": _junit_is_ours, ".png": _png_is_ours,
                ".ckpt": _checkpoint_is_ours, ".npz": _calibration_is_ours}


def written_by_edgeseg(path: str | Path) -> bool:
    """Whether an existing regular file is recognisably one edgeseg wrote (by its content, not its name)."""
    path = Path(path)
    recognise = _RECOGNISERS.get(path.suffix.lower())
    return recognise is not None and path.is_file() and not path.is_symlink() and recognise(path)


def _not_written_by_edgeseg(path: Path) -> str | None:
    return None if written_by_edgeseg(path) else ("exists and was not written by edgeseg; it is never replaced, "
                                                  "whatever the flags: choose another path")


def check_overwrite(*paths: str | Path, force: bool) -> None:
    """Refuse to write over an existing path unless edgeseg wrote it and ``force`` is given; the temporaries a
    killed edgeseg left beside each path (``.NAME.edgeseg-…``) are swept."""
    from edgeseg.housekeeping import sweep_stale

    paths = [Path(p) for p in paths]
    for path in paths:
        check_replace(path, force, _not_written_by_edgeseg)
    for folder in {path.parent for path in paths}:  # one listing per folder
        sweep_stale(folder, prefix=tuple(f".{p.name}" for p in paths if p.parent == folder))


def json_schema_is(schema: str, refusal: str) -> Callable[[Path], str | None]:
    """A ``foreign`` check for :func:`check_replace`: ours is a regular file holding a JSON object whose
    ``schema`` is ``schema``; anything else is refused with ``refusal``."""

    def foreign(path: Path) -> str | None:
        return None if (json_object(path) or {}).get("schema") == schema else refusal

    return foreign


def check_junit_path(path: str | Path) -> None:
    """A JUnit file is rewritten on every CI run: what is there is replaced (no ``--force`` needed) only when it
    is an edgeseg JUnit report — not any other file edgeseg wrote (a checkpoint, a bench result, a manifest)."""
    check_replace(path, True, lambda p: None if _junit_is_ours(p) else
                  "exists and is not an edgeseg JUnit report; it is never replaced, whatever the flags: choose "
                  "another --junit path")
