"""The bundle: a directory of artifacts plus ``manifest.json`` with a sha256 for every file.

It is built in a temporary sibling directory and renamed into place, so an interrupted ``compress`` never
leaves a partial bundle; loading verifies every hash first.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from .checkpoint import file_sha256
from .errors import EdgesegError

SCHEMA, SCHEMA_VERSION = "edgeseg-bundle", 1
MANIFEST = "manifest.json"


def tool_versions() -> dict[str, str]:
    """Versions of Python and every runtime/tool that may touch a bundle (absent ones are skipped)."""
    import importlib.metadata as md
    import platform

    versions = {"python": platform.python_version()}
    for dist in ("edgeseg", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "torch-pruning",
                 "tensorrt", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return versions


def file_entry(bundle_dir: Path, rel: str) -> dict:
    path = Path(bundle_dir) / rel
    return {"path": rel, "sha256": file_sha256(path), "bytes": path.stat().st_size}


@contextlib.contextmanager
def staging_dir(out: Path, force: bool = False):
    """Yield a temporary directory beside ``out``; on success it replaces ``out``, on any error it vanishes."""
    out = Path(out)
    if out.exists() and not force:
        raise EdgesegError(f"{out}: exists; pass --force to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(bundle_dir: Path, manifest: dict) -> dict:
    """Hash every artifact file into the manifest and write ``manifest.json`` (atomically)."""
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **manifest}
    for artifact in manifest["artifacts"]:
        artifact["hashes"] = {role: file_entry(bundle_dir, rel) for role, rel in artifact["files"].items()}
    for name in manifest.get("extra_files", {}).values():
        manifest.setdefault("extra_hashes", {})[name] = file_entry(bundle_dir, name)
    from .data.io import atomic_write

    atomic_write(Path(bundle_dir) / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return manifest


def read_manifest(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise EdgesegError(f"{bundle_dir}: not an edgeseg bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgesegError(f"{path}: invalid JSON ({exc})") from None
    if manifest.get("schema") != SCHEMA:
        raise EdgesegError(f"{path}: not an edgeseg bundle manifest")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise EdgesegError(f"{path}: bundle schema {manifest['schema_version']} is newer than this edgeseg reads "
                           f"({SCHEMA_VERSION}); upgrade edgeseg")
    return manifest


def failed_files(bundle_dir: str | Path) -> dict[str, str]:
    """``{relative path: why}`` for every file the manifest lists that is missing or fails its sha256."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    entries = [e for a in manifest["artifacts"] for e in a.get("hashes", {}).values()]
    entries += list(manifest.get("extra_hashes", {}).values())
    failed = {}
    for entry in entries:
        path = bundle_dir / entry["path"]
        if not path.is_file():
            failed[entry["path"]] = "missing"
        elif path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            failed[entry["path"]] = "sha256 mismatch (modified or corrupted)"
    return failed


def verify_bundle(bundle_dir: str | Path) -> list[str]:
    """Problems found re-hashing every file the manifest lists (empty list: the bundle is intact)."""
    return [f"{path}: {reason}" for path, reason in failed_files(bundle_dir).items()]


def load_bundle(bundle_dir: str | Path) -> dict:
    """The manifest of a verified bundle; refuses one whose files do not match their hashes."""
    problems = verify_bundle(bundle_dir)
    if problems:
        raise EdgesegError(f"{bundle_dir}: bundle failed verification: {problems[0]}"
                           f"{f' (+{len(problems) - 1} more)' if len(problems) > 1 else ''}")
    return read_manifest(bundle_dir)


def add_artifact_file(bundle_dir: str | Path, artifact_name: str, role: str, rel: str) -> dict:
    """Register a file produced after compress (e.g. a TensorRT engine built on the device) and re-hash."""
    bundle_dir = Path(bundle_dir)
    manifest = load_bundle(bundle_dir)
    for artifact in manifest["artifacts"]:
        if artifact["name"] == artifact_name:
            artifact["files"][role] = rel
            artifact["hashes"][role] = file_entry(bundle_dir, rel)
            break
    else:
        raise EdgesegError(f"{bundle_dir}: no artifact named {artifact_name!r}")
    from .data.io import atomic_write

    atomic_write(bundle_dir / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return manifest
