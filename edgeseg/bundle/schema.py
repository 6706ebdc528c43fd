"""The shape of ``manifest.json``, checked on every load: a wrong field is one line naming it.

Only what edgeseg acts on is constrained (what gets loaded, how inputs are prepared, what labels mean);
report sections (accuracy, latency, device, tuning history) are free-form objects.
"""
from __future__ import annotations

import re

from edgeseg.bundle.members import check_relative
from edgeseg.validation import (
    SHA256,
    expect_choice,
    expect_dict,
    expect_int,
    expect_list,
    expect_str,
    expect_str_list,
    fail,
    short,
)

SCHEMA, SCHEMA_VERSION = "edgeseg-bundle", 2
MIN_SCHEMA_VERSION = 2  # version 1 manifests carry no digest of their own content
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
ROLE = re.compile(r"^(model|weights|end_to_end|end_to_end_weights|engine:[A-Za-z0-9._+-]{1,160})$")
DEVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,31}$")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# keys that redirect what a runner opens: only edgeseg's own in-process artifacts may carry them
_INTERNAL_KEYS = ("root", "engine_path", "workload")
MODEL_ROLES = ("model", "end_to_end")  # the files a runtime loads as a model (the others: weights, engines)
_MAX_FILE_BYTES = 1 << 40


def check_header(manifest, where: str) -> None:
    """Schema name and version (readers refuse newer versions and pre-digest ones)."""
    expect_dict(manifest, "manifest")
    if manifest.get("schema") != SCHEMA:
        fail("schema", f"not an edgeseg bundle manifest ({str(manifest.get('schema'))[:40]!r})")
    version = expect_int(manifest.get("schema_version"), "schema_version", 1, 10**6)
    if version > SCHEMA_VERSION:
        fail("schema_version", f"bundle schema {version} is newer than this edgeseg reads ({SCHEMA_VERSION}); "
                               "upgrade edgeseg")
    if version < MIN_SCHEMA_VERSION:
        fail("schema_version", f"bundle schema {version} predates manifest digests; re-create {where} with "
                               "`edgeseg compress`")


def _check_entry(entry, field: str) -> None:
    expect_dict(entry, field)
    check_relative(expect_str(entry.get("path"), f"{field}.path", max_len=1024), f"{field}.path")
    expect_str(entry.get("sha256"), f"{field}.sha256", pattern=SHA256)
    expect_int(entry.get("bytes"), f"{field}.bytes", 0, _MAX_FILE_BYTES)


def _check_model_suffix(files: dict, runtime: str, field: str) -> None:
    """The runtime's model files (roles model, end_to_end) end as its target declares (``Target.model_suffix``):
    the suffix decides which content checks a file gets, so a file may not dodge them by its name."""
    from edgeseg.targets.registry import find_target

    suffix = getattr(find_target(runtime), "model_suffix", None)
    for role in MODEL_ROLES:
        if suffix and role in files and not files[role].endswith(suffix):
            fail(f"{field}.files.{role}",
                 f"{short(files[role], 80)} does not end in {suffix}, as {runtime} model files must")


def _check_artifact(artifact, field: str) -> None:
    from edgeseg.targets.registry import target_names  # the registered runtimes (edgeseg's and outside ones)

    expect_dict(artifact, field)
    for key in _INTERNAL_KEYS:
        if key in artifact:
            fail(f"{field}.{key}", "not allowed in a manifest (artifacts load only from hashed bundle files)")
    expect_str(artifact.get("name"), f"{field}.name", pattern=NAME)
    runtime = expect_choice(artifact.get("runtime"), f"{field}.runtime", target_names())
    expect_choice(artifact.get("precision"), f"{field}.precision", PRECISIONS)
    expect_str(artifact.get("profile"), f"{field}.profile", max_len=256)  # what loaders read it by
    expect_str(artifact.get("device", "cpu"), f"{field}.device", pattern=DEVICE)
    files = expect_dict(artifact.get("files"), f"{field}.files")
    hashes = expect_dict(artifact.get("hashes"), f"{field}.hashes")
    if "model" not in files:
        fail(f"{field}.files.model", "missing")
    if set(files) != set(hashes):
        fail(f"{field}.hashes", f"roles {sorted(hashes)} differ from files {sorted(files)}")
    for role, rel in files.items():
        expect_str(role, f"{field}.files", pattern=ROLE)
        _check_entry(hashes[role], f"{field}.hashes.{role}")
        if rel != hashes[role]["path"]:  # one source of truth: the file that is hashed is the file that is loaded
            fail(f"{field}.files.{role}", f"{str(rel)[:80]!r} is not the hashed file {hashes[role]['path']!r}")
    _check_model_suffix(files, runtime, field)
    expect_str_list(artifact.get("float_nodes", []), f"{field}.float_nodes")
    expect_dict(artifact.get("details", {}), f"{field}.details")


def check_manifest(manifest: dict) -> None:
    """Every field edgeseg acts on, typed and bounded (raises a one-line ``FieldError``)."""
    from edgeseg.checkpoint import check_model_fields
    from edgeseg.data.preprocessing import PreprocessSpec

    expect_str(manifest.get("manifest_sha256"), "manifest_sha256", pattern=SHA256)
    PreprocessSpec.from_dict(manifest.get("preprocessing"), "preprocessing")
    model = expect_dict(manifest.get("model"), "model")
    check_model_fields({**model, "preprocessing": manifest["preprocessing"]}, "model", "preprocessing")
    expect_str_list(manifest.get("labels", model["label_names"]), "labels", 2, 255)
    inputs = expect_dict(manifest.get("input", {}), "input")
    if inputs.get("image_dims") is not None:
        expect_choice(inputs["image_dims"], "input.image_dims", (2, 3))
    if inputs.get("axcodes") is not None:
        for i, code in enumerate(expect_list(inputs["axcodes"], "input.axcodes", 3, 3)):
            expect_choice(code, f"input.axcodes[{i}]", "LRPAIS")
    artifacts = expect_list(manifest.get("artifacts"), "artifacts", 1, 256)
    for i, artifact in enumerate(artifacts):
        _check_artifact(artifact, f"artifacts[{i}]")
    names = [a["name"] for a in artifacts]
    if len(set(names)) != len(names):
        fail("artifacts", "two artifacts share a name")
    extra_hashes = expect_dict(manifest.get("extra_hashes", {}), "extra_hashes")
    for name, rel in expect_dict(manifest.get("extra_files", {}), "extra_files").items():
        if expect_str(rel, f"extra_files.{name}", max_len=1024) not in extra_hashes:
            fail(f"extra_files.{name}", f"{str(rel)[:80]!r} has no entry in extra_hashes")
    for rel, entry in extra_hashes.items():
        _check_entry(entry, f"extra_hashes.{rel}")
        if entry["path"] != rel:
            fail(f"extra_hashes.{rel}", f"path {entry['path']!r} differs from its key")
    for key in ("calibration", "pruning", "accuracy_aware"):
        if manifest.get(key) is not None:
            expect_dict(manifest[key], key)
