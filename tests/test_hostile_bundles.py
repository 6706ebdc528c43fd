"""Hostile bundles, checkpoints and imports (tester's findings F1–F9, m1–m3): each is refused with one line and the
documented exit code (2 unusable input, 3 failed verification), never a traceback, a hang or a runaway build.

The bundle here is the smallest real one: a tiny U-Net checkpoint as its one (PyTorch) artifact, written by
``write_manifest``; an attacker's edits are "re-signed" (the manifest digest recomputed) so that only the rule
under test can stop them.
"""
import json
import os
import shutil
import threading
import time

import pytest
from typer.testing import CliRunner

from edgeseg.artifact import Artifact
from edgeseg.bundle import load_bundle, manifest_digest, read_manifest, write_manifest
from edgeseg.checkpoint import CheckpointSpec, load_checkpoint, save_checkpoint
from edgeseg.cli import app
from edgeseg.data import PreprocessSpec
from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.validation import FieldError, expect_choice

CKPT = "torch-fp32.ckpt"


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, code=2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _spec(**over) -> CheckpointSpec:
    base = dict(arch="unet", arch_kwargs={"base": 4, "depth": 2}, in_channels=1, num_classes=2,
                label_names=["bg", "fg"], preprocessing=PreprocessSpec((32, 32), ["ch0"]))
    return CheckpointSpec(**{**base, **over})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A verified one-artifact bundle (a tiny U-Net checkpoint), built once; tests edit copies."""
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    out.mkdir()
    spec = _spec()
    save_checkpoint(out / CKPT, spec.build_model(), spec)
    artifact = Artifact(name="torch-fp32", runtime="torch", precision="fp32", files={"model": CKPT},
                        profile="torch-fp32")
    body = spec.to_dict()
    write_manifest(out, {"model": {k: v for k, v in body.items() if k != "preprocessing"},
                         "preprocessing": body["preprocessing"], "labels": spec.label_names,
                         "input": {"image_dims": 2}, "artifacts": [artifact.to_dict()]})
    load_bundle(out)
    return out


@pytest.fixture
def bundle(tiny, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny, out)
    return out


def _resign(bundle_dir, edit) -> None:
    """Apply ``edit(manifest)`` to the raw manifest and recompute its digest (what an attacker can always do)."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    edit(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))


def _artifact(bundle_dir, runtime: str, files: dict[str, tuple[str, bytes]]) -> dict:
    """A manifest artifact of ``runtime`` whose files (role → (name, bytes)) are written into the bundle."""
    import hashlib

    artifact = {"name": f"x-{runtime}", "runtime": runtime, "precision": "fp32", "profile": "x", "files": {},
                "hashes": {}}
    for role, (rel, data) in files.items():
        (bundle_dir / rel).write_bytes(data)
        artifact["files"][role] = rel
        artifact["hashes"][role] = {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return artifact


def _onnx_bytes() -> bytes:
    """A valid one-node ONNX model whose weights are external data in ``secret.bin`` (what F1 read from the CWD)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "4")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [weight])
    return helper.make_model(graph).SerializeToString()


# F1 (a) — a runtime's model files end as its target declares: the ending chooses the content checks
@pytest.mark.parametrize("runtime, role, name", [("openvino", "model", "evil.ovmodel"),
                                                 ("onnxruntime", "end_to_end", "evil.e2e.bin")])
def test_a_model_file_named_to_dodge_its_content_checks_is_refused(bundle, runtime, role, name):
    files = {"model": ("evil.onnx", _onnx_bytes()), role: (name, _onnx_bytes())}
    if runtime == "openvino":
        files["weights"] = ("evil.weights", b"\0" * 4)
    _resign(bundle, lambda m: m["artifacts"].append(_artifact(bundle, runtime, files)))
    line = _one_line_error(_run("verify", bundle))
    assert f"artifacts[1].files.{role}" in line and name in line
    assert f"as {runtime} model files must" in line


def test_a_target_without_a_model_suffix_keeps_its_own_file_names(bundle):
    from edgeseg.targets import Target, register_target, unregister_target

    class Outside(Target):  # defined here: not exported to worker processes
        name = "outside-runtime"

    register_target(Outside)
    try:
        files = {"model": ("model.blob", b"anything")}
        _resign(bundle, lambda m: m["artifacts"].append(_artifact(bundle, "outside-runtime", files)))
        assert read_manifest(bundle)["artifacts"][1]["files"]["model"] == "model.blob"
    finally:
        unregister_target("outside-runtime")


# F1 (b) — OpenVINO reads what it is given as IR only (it would read ONNX, with external data from the CWD)
def test_openvino_refuses_model_bytes_that_are_not_an_ir(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from edgeseg.targets.openvino_backend import OvPredictor

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4)
    with pytest.raises(VerificationError, match="evil.ovmodel: not an OpenVINO IR"):
        OvPredictor((_onnx_bytes(), b""), name="evil.ovmodel")


# F2, F3 — a listed file replaced by a FIFO or a directory
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_listed_file_that_is_not_a_regular_file_fails_verification(bundle, kind):
    (bundle / CKPT).unlink()
    if kind == "fifo":
        os.mkfifo(bundle / CKPT)
    else:
        (bundle / CKPT).mkdir()
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=_run("verify", bundle)), daemon=True)
    worker.start()
    worker.join(timeout=30)  # a FIFO opened for reading blocks until a writer comes: never
    assert not worker.is_alive(), "verify blocked on the FIFO"
    result = outcome["result"]
    assert result.exit_code == 3 and f"FAIL {CKPT}: not a regular file" in result.output, result.output
    assert "Traceback" not in result.output
    with pytest.raises(VerificationError, match="not a regular file"):
        load_bundle(bundle)


# F4 — extra_files values are paths
@pytest.mark.parametrize("value", [["x"], {"a": 1}])
def test_extra_files_values_must_be_strings(bundle, value):
    _resign(bundle, lambda m: m.update(extra_files={"calibration": value}))
    line = _one_line_error(_run("verify", bundle))
    assert "extra_files.calibration: expected a string" in line


# F5 — numbers beyond Python's 4300-digit limit (a ValueError, not a JSONDecodeError) in untrusted JSON
def test_a_number_beyond_the_digit_limit_is_invalid_json(bundle, tmp_path):
    from edgeseg.gating.explanation import read_gate_input

    (bundle / "manifest.json").write_text('{"schema": "edgeseg-bundle", "schema_version": ' + "9" * 5000 + "}")
    assert "invalid JSON (Exceeds the limit" in _one_line_error(_run("verify", bundle))
    result = tmp_path / "result.json"
    result.write_text('{"schema": ' + "9" * 5000 + "}")
    with pytest.raises(EdgesegError, match="not valid JSON"):
        read_gate_input(result)


# F6 — a listed size nothing holds, an overlong path
def test_a_listed_size_unlike_the_file_is_refused_before_reading(bundle):
    _resign(bundle, lambda m: m["artifacts"][0]["hashes"]["model"].update(bytes=1 << 40))
    result = _run("verify", bundle)
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "bytes where the manifest lists 1099511627776" in result.output


def test_an_overlong_path_is_one_line(bundle):
    def edit(manifest):
        artifact = manifest["artifacts"][0]
        artifact["files"]["model"] = artifact["hashes"]["model"]["path"] = "a" * 1000

    _resign(bundle, edit)
    line = _one_line_error(_run("verify", bundle))
    assert "artifacts[0].hashes.model.path" in line and "longer than 255 bytes" in line and len(line) < 400


# F7 — a hostile checkpoint header or spec
def _checkpoint_with_header(path, header: bytes):
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


@pytest.mark.parametrize("header, message", [
    (b"[" * 100_000 + b"]" * 100_000, "not a safetensors checkpoint"),
    (b'{"x": ' + b"9" * 5000 + b"}", "not a safetensors checkpoint"),
    (b'{"__metadata__": {"edgeseg": "' + b"[" * 100_000 + b'"}}', "the edgeseg spec is not valid JSON"),
    (b'{"__metadata__": {"edgeseg": "{\\"x\\": ' + b"9" * 5000 + b'}"}}', "the edgeseg spec is not valid JSON"),
])
def test_a_hostile_checkpoint_header_is_one_line(tmp_path, header, message):
    path = _checkpoint_with_header(tmp_path / "evil.ckpt", header)
    with pytest.raises(EdgesegError, match=message):
        load_checkpoint(path)
    assert message in _one_line_error(_run("info", path))


def _saved(tmp_path, **spec_fields):
    """A checkpoint of the tiny U-Net whose spec then says ``spec_fields`` (the weights stay the U-Net's)."""
    spec = _spec()
    path = save_checkpoint(tmp_path / "m.ckpt", spec.build_model(), spec)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["edgeseg"] = json.dumps({**json.loads(header["__metadata__"]["edgeseg"]), **spec_fields})
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size :])
    return path


@pytest.mark.parametrize("attr", ["forward", "_modules", "training"])
def test_a_pruned_structure_sets_widths_only(tmp_path, attr):
    path = _saved(tmp_path, pruning={"structure": {"modules": {"encoder": {attr: "x"}}, "parameters": {}}})
    line = _one_line_error(_run("info", path))
    assert f"pruning.structure.modules.encoder.{attr}: not a width" in line


def test_any_error_of_a_constructor_is_one_line_naming_the_architecture(tmp_path):
    pytest.importorskip("monai")
    path = _saved(tmp_path, arch="monai:DynUNet", arch_kwargs={"spatial_dims": 2, "kernel_size": [3], "strides": [1],
                                                                "upsample_kernel_size": []})
    with pytest.raises(EdgesegError, match=r"monai:DynUNet: cannot be built from these arguments \(IndexError"):
        load_checkpoint(path)


# F8 — absurd sizes are refused before (or early while) building
def test_an_absurd_depth_stops_the_build_early(tmp_path):
    path = _saved(tmp_path, arch="hybrid", arch_kwargs={"base": 4, "depth": 2, "embed_dim": 16, "num_heads": 2,
                                                       "img_size": 32, "num_layers": 10**6})
    start = time.monotonic()
    with pytest.raises(EdgesegError, match="more than 20000 modules"):
        load_checkpoint(path)
    assert time.monotonic() - start < 30


def test_arch_kwargs_numbers_are_bounded(tmp_path):
    path = _saved(tmp_path, arch_kwargs={"base": 4, "depth": 10**9})
    assert "arch_kwargs.depth: 1000000000 is outside" in _one_line_error(_run("info", path))


# F9 — a hostile MONAI bundle folder
def _bomb() -> dict:
    config = {f"l{i}": [f"@l{i + 1}"] * 10 for i in range(15)}
    return {**config, "l15": 1}


@pytest.mark.parametrize("network_def, extra, message", [
    ({"_target_": "UNet", "spatial_dims": 2, "out_channels": 2}, {}, "network_def: no in_channels"),
    ({"_target_": "UNet", "spatial_dims": 2, "in_channels": "abc", "out_channels": 2}, {},
     "network_def.in_channels: expected an integer"),
    ([1], {}, "network_def: expected an object with a _target_"),
    ({"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": "@l0", "strides": [2]},
     _bomb(), "references expand to more than 100000 values"),
    (None, {}, "unreadable config (UnicodeDecodeError"),
])
def test_a_hostile_monai_bundle_is_one_line(tmp_path, network_def, extra, message):
    pytest.importorskip("monai")
    folder = tmp_path / "mb"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "models" / "model.pt").write_bytes(b"")
    config = folder / "configs" / "inference.json"
    if network_def is None:
        config.write_bytes(b'{"network_def": "\xff"}')
    else:
        config.write_text(json.dumps({"network_def": network_def, **extra}))
    start = time.monotonic()
    line = _one_line_error(_run("import", folder, "--labels", "bg,fg", "--out", tmp_path / "m.ckpt"))
    assert message in line and time.monotonic() - start < 30


# m1 — verify checks what loaders need
def test_an_artifact_without_a_profile_fails_verify(bundle):
    _resign(bundle, lambda m: m["artifacts"][0].pop("profile"))
    assert "artifacts[0].profile: expected a string" in _one_line_error(_run("verify", bundle))


# m2 — choices are type-strict: 2.0 and True are not 2 and 1
@pytest.mark.parametrize("value", [2.0, True])
def test_choices_are_type_strict(bundle, value):
    with pytest.raises(FieldError):
        expect_choice(value, "x", (1, 2))
    _resign(bundle, lambda m: m["input"].update(image_dims=value))
    assert "input.image_dims" in _one_line_error(_run("verify", bundle))


# m3 — what an error line quotes is cut short
def test_an_absurd_value_is_not_echoed_in_full(bundle):
    _resign(bundle, lambda m: m.update(schema_version=10**4000))
    line = _one_line_error(_run("verify", bundle))
    assert "schema_version" in line and "…" in line and len(line) < 400


def test_external_data_in_a_functions_default_attribute_is_refused():
    """FunctionProto.attribute_proto holds default attribute values, which may be tensors: scanned like a node's."""
    from onnx import TensorProto, helper

    from edgeseg.bundle.onnx_scan import check_self_contained

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/secret.bin"
    function = helper.make_function("local", "F", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
                                    [helper.make_opsetid("", 17)], attributes=[])
    function.attribute_proto.append(helper.make_attribute("value", tensor))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17),
                                                                          helper.make_opsetid("local", 1)])
    with pytest.raises(EdgesegError, match="external file '/etc/secret.bin'"):
        check_self_contained(model.SerializeToString(), "m.onnx")

