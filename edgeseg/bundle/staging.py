"""Writing a bundle: built in a staging folder beside ``out`` and renamed into place.

``--force`` may replace only a previous edgeseg bundle — a folder whose ``manifest.json`` is an edgeseg
bundle manifest and that holds nothing the manifest does not list. Anything else (a dataset folder, a
bundle someone added notes to, a file) is refused whatever the flags: edgeseg never deletes what it did
not write. Staging folders of runs that were killed are swept on the next run (see
:mod:`edgeseg.housekeeping`).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from edgeseg.housekeeping import mark, sweep_stale, temp_dir, temp_name
from edgeseg.overwrite import check_replace, json_object


def _bundle_listing(folder: Path) -> set[str] | None:
    """The paths a previous bundle's manifest lists (manifest included), or None if it is not one."""
    manifest = json_object(folder / "manifest.json", follow_links=True)
    if manifest is None or manifest.get("schema") != "edgeseg-bundle":
        return None
    listed = {"manifest.json"}
    try:
        for artifact in manifest.get("artifacts", []):
            listed |= {e["path"] for e in artifact.get("hashes", {}).values()} | set(artifact.get("files", {}).values())
        listed |= {e["path"] for e in manifest.get("extra_hashes", {}).values()}
    except (AttributeError, TypeError, KeyError):
        return None
    return {p for p in listed if isinstance(p, str)}


def _not_our_bundle(out: Path) -> str | None:
    """Why ``out`` is not a previous edgeseg bundle holding only what its manifest lists (None: it is one)."""
    if out.is_symlink() or not out.is_dir():
        return "exists and is not a bundle folder; edgeseg will not replace it (choose another --out)"
    listed = _bundle_listing(out)
    if listed is None:
        return ("exists and is not an edgeseg bundle; edgeseg will not replace it, whatever the flags (choose another "
                "--out)")
    foreign = sorted(rel for p in out.rglob("*")
                     if (p.is_symlink() or not p.is_dir()) and (rel := p.relative_to(out).as_posix()) not in listed)
    if foreign:
        return (f"holds {len(foreign)} file(s) its manifest does not list (e.g. {foreign[0]}); edgeseg will not "
                "delete what it did not write, whatever the flags")
    return None


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse ``out`` unless it is absent, an empty folder, or (with ``force``) a previous edgeseg bundle: the
    overwrite rule of :func:`edgeseg.overwrite.check_replace` for a bundle folder."""
    out = Path(out)
    if out.is_dir() and not out.is_symlink() and next(out.rglob("*"), None) is None:
        return  # an empty folder is free
    check_replace(out, force, _not_our_bundle, "an edgeseg bundle exists there")


@contextlib.contextmanager
def staging_dir(out: Path, force: bool = False):
    """Yield a staging folder beside ``out``; on success it replaces ``out``, on any error it vanishes."""
    out = Path(out)
    check_replaceable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out.parent)
    staging = temp_dir(f".{out.name}.partial", out.parent)  # marked as edgeseg's; the bundle is built inside it
    tmp = staging / "bundle"
    tmp.mkdir()
    try:
        yield tmp
        check_replaceable(out, force)  # again: something may have appeared there while we worked
        old = None
        if out.exists():
            old = temp_name(f".{out.name}.old", out.parent)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            mark(old)  # only now: a kill before this leaves the old bundle whole, unswept, for a person to restore
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
