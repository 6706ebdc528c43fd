"""Writing a bundle: built in a staging folder beside ``out`` and renamed into place.

``--force`` may replace only a previous edgeseg bundle — a folder whose ``manifest.json`` is an edgeseg
bundle manifest and that holds nothing the manifest does not list. Anything else (a dataset folder, a
bundle someone added notes to, a file) is refused whatever the flags: edgeseg never deletes what it did
not write. Staging folders of runs that were killed are swept on the next run (see
:mod:`edgeseg.housekeeping`).
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from ..errors import EdgesegError
from ..housekeeping import owner_tag, sweep_stale, temp_dir


def _bundle_listing(folder: Path) -> set[str] | None:
    """The paths a previous bundle's manifest lists (manifest included), or None if it is not one."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("schema") != "edgeseg-bundle":
        return None
    listed = {"manifest.json"}
    try:
        for artifact in manifest.get("artifacts", []):
            listed |= {e["path"] for e in artifact.get("hashes", {}).values()} | set(artifact.get("files", {}).values())
        listed |= {e["path"] for e in manifest.get("extra_hashes", {}).values()}
    except (AttributeError, TypeError, KeyError):
        return None
    return {p for p in listed if isinstance(p, str)}


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse ``out`` unless it is absent, an empty folder, or (with ``force``) a previous edgeseg bundle."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a bundle folder; edgeseg will not replace it (choose another --out)")
    entries = [p for p in out.rglob("*")]
    if not entries:
        return
    listed = _bundle_listing(out)
    if listed is None:
        raise EdgesegError(f"{out}: exists and is not an edgeseg bundle; edgeseg will not replace it, whatever the "
                           "flags (choose another --out)")
    foreign = sorted(p.relative_to(out).as_posix() for p in entries
                     if (p.is_file() or p.is_symlink()) and p.relative_to(out).as_posix() not in listed)
    if foreign:
        raise EdgesegError(f"{out}: holds {len(foreign)} file(s) its manifest does not list (e.g. {foreign[0]}); "
                           "edgeseg will not delete what it did not write, whatever the flags")
    if not force:
        raise EdgesegError(f"{out}: an edgeseg bundle exists there; pass --force to replace it")


@contextlib.contextmanager
def staging_dir(out: Path, force: bool = False):
    """Yield a staging folder beside ``out``; on success it replaces ``out``, on any error it vanishes."""
    out = Path(out)
    check_replaceable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out.parent)
    tmp = temp_dir(f".{out.name}.partial", out.parent)
    try:
        yield tmp
        check_replaceable(out, force)  # again: something may have appeared there while we worked
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old{owner_tag()}0")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
