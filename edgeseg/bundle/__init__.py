"""The bundle: a directory of artifacts plus ``manifest.json`` — what ``compress`` writes and devices run.

What is verified is exactly what is loaded (docs/bundle.md): the manifest is checked against its schema and
its own content digest; every file it lists must be a regular file inside the bundle whose sha256 matches;
model files must be self-contained and carry the manifest's preprocessing and labels; runners get the bytes
that were hashed, never a path to re-open. Bundles are built in a staging folder and renamed into place.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.bundle.contents import check_contents
from edgeseg.bundle.members import artifact_bytes, member_path, read_verified, unlisted_files
from edgeseg.bundle.schema import SCHEMA, SCHEMA_VERSION, check_header, check_manifest
from edgeseg.bundle.staging import check_replaceable, staging_dir
from edgeseg.errors import EdgesegError, InputError, VerificationError
from edgeseg.validation import JSON_ERRORS, FieldError

MANIFEST = "manifest.json"
DIGEST_KEY = "manifest_sha256"
_MAX_MANIFEST_BYTES = 64 << 20

__all__ = ["MANIFEST", "SCHEMA", "SCHEMA_VERSION", "add_artifact_file", "artifact_bytes", "check_replaceable",
           "failed_files",
           "file_entry", "hash_files", "load_bundle", "manifest_digest", "member_path", "read_manifest", "read_member",
           "staging_dir", "tool_versions", "unlisted_files", "verify_bundle", "write_manifest"]


def tool_versions() -> dict[str, str]:
    """Versions of Python and every runtime/tool that may touch a bundle (absent ones are skipped): edgeseg's,
    each registered target's (``Target.tool_versions``), torch-pruning's and numpy's."""
    import platform

    from edgeseg.targets.base import dist_versions
    from edgeseg.targets.registry import runtime_tool_versions

    return {"python": platform.python_version(), **dist_versions("edgeseg"), **runtime_tool_versions(),
            **dist_versions("torch-pruning", "numpy")}


def file_entry(bundle_dir: Path, rel: str) -> dict:
    path = member_path(bundle_dir, rel)
    data = path.read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def hash_files(bundle_dir: Path, files: dict[str, str]) -> dict:
    """``{role: file entry}`` for an artifact's files (role → relative path): what loaders verify and read."""
    return {role: file_entry(bundle_dir, rel) for role, rel in files.items()}


def manifest_artifacts(manifest: dict) -> list[Artifact]:
    """The manifest's artifacts as :class:`~edgeseg.targets.base.Artifact` objects (what the rest of the code
    handles)."""
    return [Artifact.from_dict(a) for a in manifest["artifacts"]]


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces) without the digest field itself."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write(bundle_dir: Path, manifest: dict) -> dict:
    from edgeseg.data.io import atomic_write

    manifest = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    atomic_write(Path(bundle_dir) / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return manifest


def write_manifest(bundle_dir: Path, manifest: dict) -> dict:
    """Hash every artifact file into the manifest, add its content digest and write ``manifest.json``."""
    manifest = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "schema_version": SCHEMA_VERSION}
    for artifact in manifest["artifacts"]:
        artifact["hashes"] = hash_files(bundle_dir, artifact["files"])
    for rel in manifest.get("extra_files", {}).values():
        manifest.setdefault("extra_hashes", {})[rel] = file_entry(bundle_dir, rel)
    return _write(bundle_dir, manifest)


def read_manifest(bundle_dir: str | Path, expected_digest: str | None = None) -> dict:
    """The manifest, checked against its schema and its content digest (files are not read: see
    :func:`load_bundle`). ``expected_digest`` pins the bundle to a digest obtained out of band."""
    path = Path(bundle_dir) / MANIFEST
    if not Path(bundle_dir).is_dir() or not path.is_file() or path.is_symlink():
        raise InputError(f"{bundle_dir}: not an edgeseg bundle (no {MANIFEST})")
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise InputError(f"{path}: larger than {_MAX_MANIFEST_BYTES >> 20} MB; not a manifest edgeseg wrote")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except JSON_ERRORS as exc:  # also an integer beyond Python's digit limit, nesting beyond its recursion limit
        raise InputError(f"{path}: invalid JSON ({str(exc)[:120]})") from None
    try:
        check_header(manifest, str(bundle_dir))
        check_manifest(manifest)
        digest = manifest_digest(manifest)
    except FieldError as exc:
        raise InputError(f"{path}: {exc}") from None
    except RecursionError:  # a free-form section nested just below the parser's limit
        raise InputError(f"{path}: nested too deeply for a manifest edgeseg wrote") from None
    if digest != manifest[DIGEST_KEY]:
        raise VerificationError(f"{path}: content does not match its {DIGEST_KEY} (edited after edgeseg wrote it)")
    if expected_digest is not None and digest != expected_digest.removeprefix("sha256:").lower():
        raise VerificationError(f"{path}: digest {digest[:16]}… is not the expected {expected_digest[:23]}…")
    return manifest


def failed_files(bundle_dir: str | Path, manifest: dict | None = None) -> dict[str, str]:
    """``{relative path: why}`` for every listed file that is missing, outside the bundle, modified, or whose
    content breaks a bundle rule (external data, embedded preprocessing/labels unlike the manifest's)."""
    manifest = manifest if manifest is not None else read_manifest(bundle_dir)
    entries = [e for a in manifest["artifacts"] for e in a["hashes"].values()]
    entries += list(manifest.get("extra_hashes", {}).values())
    failed = {}
    for entry in entries:
        try:
            check_contents(entry["path"], read_verified(bundle_dir, entry), manifest)
        except EdgesegError as exc:
            failed[entry["path"]] = str(exc).removeprefix(f"{entry['path']}: ")
    return failed


def verify_bundle(bundle_dir: str | Path) -> list[str]:
    """Problems found checking the manifest and every file it lists (empty list: the bundle is intact)."""
    return [f"{path}: {reason}" for path, reason in failed_files(bundle_dir).items()]


def load_bundle(bundle_dir: str | Path, expected_digest: str | None = None) -> dict:
    """The manifest of a verified bundle; refuses one that fails any check of :func:`failed_files`."""
    manifest = read_manifest(bundle_dir, expected_digest)
    problems = [f"{p}: {r}" for p, r in failed_files(bundle_dir, manifest).items()]
    if problems:
        raise VerificationError(f"{bundle_dir}: bundle failed verification: {problems[0]}"
                           f"{f' (+{len(problems) - 1} more)' if len(problems) > 1 else ''}")
    return manifest


def read_member(bundle_dir: str | Path, manifest: dict, rel: str) -> bytes:
    """The verified bytes of a file the manifest lists (e.g. an ``extra_files`` entry)."""
    entry = manifest.get("extra_hashes", {}).get(rel) or next(
        (e for a in manifest["artifacts"] for e in a["hashes"].values() if e["path"] == rel), None)
    if entry is None:
        raise VerificationError(f"{rel}: not a file of this bundle's manifest")
    return read_verified(bundle_dir, entry)


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
    return _write(bundle_dir, manifest)

