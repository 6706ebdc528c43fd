"""The files of a bundle: where they may be, and reading them only as the bytes the manifest hashed.

A manifest path is a plain relative path inside the bundle: not absolute, no ``.``/``..`` parts, no
backslashes, and no symbolic link anywhere on the way (a link could lead outside the bundle, or change
between the check and the read). Runners never open a bundle file by name: they get the bytes read here,
after their sha256 matched, so what runs is exactly what was verified.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.validation import fail, short

NAME_MAX = 255  # the longest file name (in bytes) Linux, macOS and Windows file systems hold


def check_relative(rel, field: str = "bundle path") -> list[str]:
    """The parts of ``rel`` if it is a plain relative path (no absolute path, drive, ``..``, ``.``, backslash,
    no part longer than a file name can be)."""
    if not isinstance(rel, str) or not rel:
        fail(field, f"expected a non-empty relative path, got {short(rel)}")
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\x00" in rel or any(p in ("", ".", "..") for p in parts) \
            or (len(parts[0]) >= 2 and parts[0][1] == ":"):
        fail(field, f"{rel[:120]!r} must be a relative path inside the bundle (no absolute path, '..', '.', or "
                    "backslash)")
    if any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in parts):
        fail(field, f"{short(rel)} has a part longer than {NAME_MAX} bytes (no file name is)")
    return parts


def member_path(bundle_dir: str | Path, rel) -> Path:
    """The path of ``rel`` inside the bundle; refuses a path that is not a plain relative path inside it."""
    parts = check_relative(rel)
    root = Path(bundle_dir).resolve()
    path = root.joinpath(*parts)
    probe = root
    try:
        for part in parts:
            probe = probe / part
            if probe.is_symlink():
                raise VerificationError(f"{rel[:120]}: is a symbolic link; bundle files must be regular files "
                                        "inside the bundle")
        inside = os.path.realpath(path) == str(path)
    except OSError as exc:  # a name too long for this file system, a permission denied on the way
        raise VerificationError(f"{rel[:120]}: cannot be checked ({exc.strerror or type(exc).__name__})") from None
    if not inside:
        raise VerificationError(f"{rel[:120]}: resolves outside the bundle")
    return path


def _open_regular(path: Path, rel: str, size: int) -> int:
    """A descriptor of the regular file at ``path`` holding ``size`` bytes. Opened without following a link and
    without blocking (a FIFO would wait for a writer forever), checked before anything is read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise VerificationError(f"{rel}: missing from the bundle") from None
    except OSError as exc:
        raise EdgesegError(f"{rel}: cannot open ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    problem = ("not a regular file" if not stat.S_ISREG(info.st_mode) else
               f"sha256 mismatch (modified or corrupted: {info.st_size} bytes where the manifest lists {size})"
               if info.st_size != size else None)
    if problem:
        os.close(fd)
        raise VerificationError(f"{rel}: {problem}")
    return fd


def read_verified(bundle_dir: str | Path, entry: dict) -> bytes:
    """The bytes of a manifest hash entry (``{"path", "sha256", "bytes"}``) after they matched its sha256."""
    rel = entry["path"]
    fd = _open_regular(member_path(bundle_dir, rel), rel, entry["bytes"])
    with os.fdopen(fd, "rb") as f:
        data = f.read(entry["bytes"] + 1)  # one more: a file that grew since fstat is caught too
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise VerificationError(f"{rel}: sha256 mismatch (modified or corrupted)")
    return data


def artifact_bytes(bundle_dir: str | Path, artifact: Artifact, role: str) -> bytes:
    """The verified bytes of one file of an artifact (``role``: model, weights, engine:<device>).

    An artifact built outside a bundle (a bench baseline, an external checkpoint) has its own ``root`` and no
    hashes; one read from a manifest never has a ``root``."""
    if artifact.root is not None:
        return (artifact.root / artifact.files[role]).read_bytes()
    entry = artifact.hashes.get(role)
    if entry is None:
        raise EdgesegError(f"{artifact.name}: no hashed file for {role!r} in the manifest")
    return read_verified(bundle_dir, entry)


def listed_paths(manifest: dict) -> set[str]:
    """Every path the manifest lists (artifact files and extra files)."""
    paths = {e["path"] for a in manifest.get("artifacts", []) for e in a.get("hashes", {}).values()}
    return paths | {e["path"] for e in manifest.get("extra_hashes", {}).values()}


def unlisted_files(bundle_dir: str | Path, manifest: dict, manifest_name: str) -> list[str]:
    """Files and links in the bundle that the manifest does not list (edgeseg never reads them)."""
    root = Path(bundle_dir)
    listed = listed_paths(manifest) | {manifest_name}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            rel = (rel_dir / name).as_posix()
            if rel not in listed:
                found.append(rel)
    return sorted(found)
