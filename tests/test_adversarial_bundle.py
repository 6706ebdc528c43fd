"""Attacks on a bundle (issue G, items 1–6, 8, 14): what is verified is exactly what is loaded, nothing outside
the bundle is ever run, a malformed manifest or checkpoint is one line, and no flag destroys user data.

Each test tampers with a copy of a real phantom INT8 bundle (ONNX Runtime, OpenVINO, TensorRT QDQ). Where an
attacker could also fix the hashes, the tests "re-sign" the manifest (recompute every sha256 and the digest),
so that only the rule under test can stop the attack.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edgeseg.artifact import Artifact
from edgeseg.bundle import load_bundle, manifest_digest, read_manifest
from edgeseg.cli import app
from edgeseg.demo import default_checkpoint
from edgeseg.errors import EdgesegError

ORT_INT8 = "x86-onnxruntime-int8"
OV_INT8 = "x86-avx512-openvino-int8"


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def copy(bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def _artifact(manifest, name):
    return next(a for a in manifest["artifacts"] if a["name"] == name)


def _resign(bundle_dir, manifest):
    """What an attacker who edits files can always do: recompute every listed sha256 and the digest."""
    for artifact in manifest["artifacts"]:
        for role, rel in artifact["files"].items():
            path = rel if os.path.isabs(rel) else bundle_dir / rel
            data = open(path, "rb").read()
            artifact["hashes"][role] = {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _infer(bundle_dir, phantom_demo, tmp_path, *extra):
    image = sorted((phantom_demo / "imagesTr").glob("*.png"))[0]
    return _run("infer", bundle_dir, image, "-o", tmp_path / "masks", "--backend", "onnxruntime", *extra)


# 1 — the file that is hashed is the file that is loaded
def test_artifact_pointing_at_an_unlisted_file_is_refused(copy, phantom_demo, tmp_path):
    manifest = read_manifest(copy)
    shutil.copyfile(copy / "x86-onnxruntime-fp32.onnx", copy / "evil.onnx")
    _artifact(manifest, ORT_INT8)["files"]["model"] = "evil.onnx"  # hashes still name the real file
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    line = _one_line_error(_run("verify", copy))
    assert "files.model" in line and "evil.onnx" in line and "not the hashed file" in line
    assert "not the hashed file" in _one_line_error(_infer(copy, phantom_demo, tmp_path))
    assert not (tmp_path / "masks").exists()


# 2 — nothing outside the bundle
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_paths_escaping_the_bundle_are_refused(copy, phantom_demo, tmp_path, how):
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(copy / f"{ORT_INT8}.onnx", outside)
    manifest = read_manifest(copy)
    artifact = _artifact(manifest, ORT_INT8)
    if how == "symlink":  # same bytes, so the sha256 matches: only the link gives it away
        (copy / f"{ORT_INT8}.onnx").unlink()
        (copy / f"{ORT_INT8}.onnx").symlink_to(outside)
        result = _run("verify", copy)
        assert result.exit_code == 3 and "symbolic link" in result.output
    else:
        artifact["files"]["model"] = str(outside) if how == "absolute" else "../outside.onnx"
        _resign(copy, manifest)
        line = _one_line_error(_run("verify", copy))
        assert "artifacts[" in line and "relative path inside the bundle" in line
    # a link is a failed verification (3); a path outside the bundle, an unusable manifest (2)
    assert _infer(copy, phantom_demo, tmp_path).exit_code == (3 if how == "symlink" else 2)
    with pytest.raises(EdgesegError):
        load_bundle(copy)


def _with_external_initializer(source, dest, location):
    """The model with one initializer moved to an external data file at ``location`` (relative to dest)."""
    model = onnx.load(str(source))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    values = onnx.numpy_helper.to_array(init).copy()
    target = (dest.parent / location)
    target.write_bytes(values.tobytes())
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(values.nbytes))):
        init.external_data.add(key=key, value=value)
    dest.write_bytes(model.SerializeToString())
    return init.name


# 3 — external data never loads
@pytest.mark.parametrize("location", ["head_bias.bin", "../outside.bin"])
def test_onnx_external_data_is_refused(copy, phantom_demo, tmp_path, location):
    model = copy / f"{ORT_INT8}.onnx"
    tensor = _with_external_initializer(model, model, location)
    _resign(copy, read_manifest(copy))  # the manifest lists the edited model with its new hash
    result = _run("verify", copy)
    assert result.exit_code == 3 and "external file" in result.output and tensor in result.output
    line = _one_line_error(_infer(copy, phantom_demo, tmp_path), code=3)  # the bundle failed verification
    assert "external" in line


def test_scanner_finds_every_external_tensor_onnx_finds(bundle, tmp_path):
    from edgeseg.bundle.onnx_scan import scan_onnx

    model = onnx.load(str(bundle / f"{ORT_INT8}.onnx"))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    saved = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    expected = sorted(t.name for t in saved.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    scan = scan_onnx((tmp_path / "ext.onnx").read_bytes(), "ext.onnx")
    assert expected and sorted(name for name, _ in scan.external) == expected
    assert {loc for _, loc in scan.external} == {"w.bin"}
    assert scan_onnx((bundle / f"{ORT_INT8}.onnx").read_bytes(), "x").external == []
    assert "edgeseg.preprocessing" in scan.metadata


def test_runner_given_bytes_never_resolves_external_data_from_the_working_directory(tmp_path, monkeypatch, bundle):
    from edgeseg.targets.onnxruntime_backend import OrtPredictor

    monkeypatch.chdir(tmp_path)
    _with_external_initializer(bundle / f"{ORT_INT8}.onnx", tmp_path / "m.onnx", "w.bin")
    with pytest.raises(EdgesegError, match="external file"):
        OrtPredictor((tmp_path / "m.onnx").read_bytes(), "int8", name="m.onnx")


# 4 — the manifest itself is covered
def test_edited_preprocessing_is_detected(copy, phantom_demo, tmp_path):
    manifest = read_manifest(copy)
    manifest["preprocessing"]["normalization"] = "none"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "manifest_sha256" in _one_line_error(_run("verify", copy), code=3)  # the digest: verification failed
    _resign(copy, manifest)  # digest recomputed: the artifacts' own copies of the preprocessing still disagree
    result = _run("verify", copy)
    assert result.exit_code == 3 and "embedded edgeseg.preprocessing differs" in result.output
    assert _infer(copy, phantom_demo, tmp_path).exit_code == 3


def test_verify_prints_the_digest_and_pins_it(copy):
    digest = read_manifest(copy)["manifest_sha256"]
    result = _run("verify", copy)
    assert result.exit_code == 0 and digest in result.output
    assert _run("verify", copy, "--expect-digest", digest).exit_code == 0
    assert "not the expected" in _one_line_error(_run("verify", copy, "--expect-digest", "0" * 64), code=3)


# 5 — malformed fields: one line naming the field
MALFORMED = {
    "artifacts-string": (lambda m: m.__setitem__("artifacts", "x"), "artifacts: expected a list"),
    "path-int": (lambda m: m["artifacts"][1]["files"].__setitem__("model", 5), "artifacts[1].files.model"),
    "channels-1e12": (lambda m: m["model"].__setitem__("in_channels", 1e12), "model.in_channels"),
    "size-negative": (lambda m: m["preprocessing"].__setitem__("size", [-5, 128]), "preprocessing.size[0]"),
    "schema-negative": (lambda m: m.__setitem__("schema_version", -1), "schema_version"),
    "schema-v1": (lambda m: m.__setitem__("schema_version", 1), "predates manifest digests"),
    "root-key": (lambda m: m["artifacts"][1].__setitem__("root", "/"), "artifacts[1].root"),
    "hashes-list": (lambda m: m["artifacts"][0].__setitem__("hashes", []), "artifacts[0].hashes"),
    "labels-short": (lambda m: m["model"].__setitem__("label_names", ["bg"]), "model.label_names"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_fields_are_one_line(copy, phantom_demo, tmp_path, case):
    mutate, field = MALFORMED[case]
    manifest = read_manifest(copy)
    mutate(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert field in _one_line_error(_run("verify", copy))
    _one_line_error(_infer(copy, phantom_demo, tmp_path))
    _one_line_error(_run("bench", copy, "--data", phantom_demo, "--no-latency", "--out", tmp_path / "r.json"))


def test_non_utf8_and_non_json_manifests_are_one_line(copy):
    (copy / "manifest.json").write_bytes(b'{"schema": "\xff\xfe"}')
    assert "not UTF-8" in _one_line_error(_run("verify", copy))
    (copy / "manifest.json").write_text("[" * 100_000)
    assert "invalid JSON" in _one_line_error(_run("verify", copy))


# 14 — a runtime refusing a (re-signed) model file: one line, not a traceback
def test_runtime_refusing_a_model_is_one_line(copy, phantom_demo, tmp_path):
    for path in (copy / f"{ORT_INT8}.onnx", copy / f"{ORT_INT8}.e2e.onnx"):  # the model and its end-to-end graph
        model = onnx.load(str(path))
        model.graph.node[0].op_type = "NoSuchOp"
        path.write_bytes(model.SerializeToString())
    _resign(copy, read_manifest(copy))
    assert _run("verify", copy).exit_code == 0  # intact as files go: only the runtime can tell
    line = _one_line_error(_infer(copy, phantom_demo, tmp_path, "--artifact", ORT_INT8))
    assert "ONNX Runtime cannot load it" in line


# 6 — --force replaces only a previous edgeseg bundle
def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_never_replaces_a_folder_edgeseg_did_not_write(phantom_demo, copy, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_demo, data)
    before = _snapshot(data)
    args = ("compress", default_checkpoint(), "--int8", "--calib", phantom_demo, "--targets", "onnx", "--force")
    assert "not an edgeseg bundle" in _one_line_error(_run(*args, "--out", data))
    assert _snapshot(data) == before
    (copy / "notes.txt").write_text("my notes")
    notes = _snapshot(copy)
    assert "notes.txt" in _one_line_error(_run(*args, "--out", copy))
    assert _snapshot(copy) == notes
    single = tmp_path / "file.txt"
    single.write_text("x")
    _one_line_error(_run(*args, "--out", single))
    assert single.read_text() == "x"


def test_force_replaces_a_previous_bundle(copy):
    from edgeseg.bundle import check_replaceable

    with pytest.raises(EdgesegError, match="pass --force"):
        check_replaceable(copy, force=False)
    check_replaceable(copy, force=True)  # a previous edgeseg bundle with nothing else in it


# 8 — a killed compress leaves nothing a rerun does not clean
def _compress_cmd(phantom_demo, out):
    return [sys.executable, "-m", "edgeseg", "compress", str(default_checkpoint()), "--int8", "--calib",
            str(phantom_demo), "--calib-size", "4", "--eval-cases", "2", "--targets", "onnx",
            "--latency-repeats", "2", "--out", str(out)]


def test_killed_compress_leftovers_are_swept_and_force_replaces_only_our_bundle(phantom_demo, tmp_path):
    tmpdir, outdir = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir(), outdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(_compress_cmd(phantom_demo, outdir / "b"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (list(outdir.glob(".b.partial*")) and list(tmpdir.glob("edgeseg-work*"))):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(outdir.iterdir()) + list(tmpdir.iterdir())
    assert any(p.name.startswith(".b.partial") for p in left) and any("edgeseg-work" in p.name for p in left)
    rerun = subprocess.run(_compress_cmd(phantom_demo, outdir / "b"), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert [p.name for p in outdir.iterdir()] == ["b"]
    assert [p.name for p in tmpdir.iterdir() if "edgeseg" in p.name] == []  # (torch's own caches may stay)
    load_bundle(outdir / "b")
    # 6 — the bundle edgeseg wrote: kept without --force, replaced (a new folder renamed into place) with it
    before = (outdir / "b").stat().st_ino
    again = subprocess.run(_compress_cmd(phantom_demo, outdir / "b"), env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stdout + again.stderr
    again = subprocess.run([*_compress_cmd(phantom_demo, outdir / "b"), "--force"], env=env, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (outdir / "b").stat().st_ino != before and [p.name for p in outdir.iterdir()] == ["b"]
    load_bundle(outdir / "b")


def test_sweep_keeps_live_processes_and_foreign_files(tmp_path):
    from edgeseg.housekeeping import MARKER, _host, sweep_stale, temp_dir

    host = _host()
    mine = temp_dir(".x.partial", tmp_path)  # this process is alive
    dead = tmp_path / f".y.partial.edgeseg-999999999-1-{host}-abcd1234"
    dead.mkdir()
    (dead / MARKER).touch()
    (dead / "model.onnx").write_text("")
    empty = tmp_path / f".e.partial.edgeseg-999999999-1-{host}-abcd1234"  # killed before it was marked
    empty.mkdir()
    reused = tmp_path / f".z.png.edgeseg-{os.getpid()}-1-{host}-abcd1234.png"  # this pid, another start: dead
    reused.write_text("")
    # named like ours but not provably ours: a user's folder without the marker, names that only contain the tag
    unmarked = tmp_path / f".u.partial.edgeseg-999999999-1-{host}-abcd1234"
    unmarked.mkdir()
    (unmarked / "notes.txt").write_text("keep")
    user_named = [tmp_path / "results.edgeseg-2024-06-final", tmp_path / "results.edgeseg-424242-0-final.csv",
                  tmp_path / f".n.png.edgeseg-999999999-1-{host}-abcd1234.png.bak"]
    user_named[0].mkdir()
    (user_named[0] / "data.txt").write_text("months of work")
    for path in user_named[1:]:
        path.write_text("keep")
    elsewhere = tmp_path / ".w.png.edgeseg-999999999-1-0badc0de-abcd1234.png"  # another host's, fresh: kept
    elsewhere.write_text("")
    old_elsewhere = tmp_path / ".v.png.edgeseg-999999999-1-0badc0de-abcd1234.png"
    old_elsewhere.write_text("")
    os.utime(old_elsewhere, (time.time() - 2 * 86400,) * 2)
    foreign = tmp_path / ".partial-not-ours"
    foreign.mkdir()
    removed = sorted(p.name for p in sweep_stale(tmp_path))
    assert removed == sorted([dead.name, empty.name, reused.name, old_elsewhere.name])
    assert all(p.exists() for p in (mine, unmarked, elsewhere, foreign, *user_named))


def test_sweep_treats_a_zombie_as_gone(tmp_path):
    from edgeseg.housekeeping import _host, _process_start, sweep_stale

    child = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < deadline:
        time.sleep(0.05)  # not reaped: a zombie until wait()
    try:
        assert _process_start(child.pid) is None
        left = tmp_path / f".m.png.edgeseg-{child.pid}-5-{_host()}-abcd1234.png"
        left.write_text("")
        assert [p.name for p in sweep_stale(tmp_path)] == [left.name]
    finally:
        child.wait()


# 14 — malformed checkpoint specs
def _ckpt_with_spec(tmp_path, edit):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(default_checkpoint()), framework="numpy") as f:
        spec = f.metadata()["edgeseg"]
    out = tmp_path / "bad.ckpt"
    save_file(load_file(str(default_checkpoint())), str(out), metadata={"edgeseg": edit(json.loads(spec))})
    return out


SPECS = {
    "bad-json": (lambda d: "{not json", "not valid JSON"),
    "list": (lambda d: json.dumps([d]), "expected an object"),
    "no-preprocessing": (lambda d: json.dumps({k: v for k, v in d.items() if k != "preprocessing"}),
                         "spec.preprocessing: missing"),
    "classes-string": (lambda d: json.dumps({**d, "num_classes": "3"}), "spec.num_classes"),
    "base-negative": (lambda d: json.dumps({**d, "arch_kwargs": {**d["arch_kwargs"], "base": -8}}), "hybrid"),
    "base-huge": (lambda d: json.dumps({**d, "arch_kwargs": {**d["arch_kwargs"], "base": 100000}}),
                  "weights do not fit"),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_malformed_checkpoint_specs_are_one_line(tmp_path, phantom_demo, case):
    edit, expected = SPECS[case]
    ckpt = _ckpt_with_spec(tmp_path, edit)
    commands = [("compress", ckpt, "--int8", "--calib", phantom_demo, "--out", tmp_path / "b"),
                ("evaluate", ckpt, "--data", phantom_demo)]
    if not case.startswith("base-"):  # a well-formed spec of an impossible model: `info` may still show it
        commands.append(("info", ckpt))
    for args in commands:
        line = _one_line_error(_run(*args))
        assert expected in line and "bad.ckpt" in line, line
    assert not (tmp_path / "b").exists()


def test_huge_spec_is_refused_without_allocating(tmp_path):
    import psutil

    from edgeseg.checkpoint import load_checkpoint

    ckpt = _ckpt_with_spec(tmp_path, lambda d: json.dumps({**d, "arch_kwargs": {**d["arch_kwargs"], "base": 100000}}))
    rss = psutil.Process().memory_info().rss
    with pytest.raises(EdgesegError, match="weights do not fit"):
        load_checkpoint(ckpt)
    assert psutil.Process().memory_info().rss - rss < 500 * 2**20


# the engine builder runs a command: it is rebuilt from the artifact's facts, never taken from the manifest
def test_prepare_engine_never_runs_the_recorded_trtexec_line(copy, tmp_path, monkeypatch):
    from edgeseg.targets.tensorrt import ensure_engine

    log = tmp_path / "argv.json"
    fake = tmp_path / "fake_trtexec.py"
    fake.write_text("import json, sys, pathlib\n"
                    f"pathlib.Path({str(log)!r}).write_text(json.dumps(sys.argv[1:]))\n"
                    "args = dict(a.split('=', 1) for a in sys.argv[1:] if '=' in a)\n"
                    "pathlib.Path(args['--saveEngine']).write_bytes(b'engine')\n")
    manifest = read_manifest(copy)
    trt = _artifact(manifest, "rtx-tensorrt-int8")
    trt["details"]["trtexec"] = "trtexec --plugins=/tmp/evil.so --onnx=x.onnx"
    _resign(copy, manifest)
    monkeypatch.setenv("EDGESEG_TRT_BUILDER", f"{sys.executable} {fake}")
    monkeypatch.setenv("EDGESEG_DEVICE_KEY", "test-gpu-trt10")
    engine, built = ensure_engine(copy, Artifact.from_dict(_artifact(load_bundle(copy), "rtx-tensorrt-int8")),
                                  tmp_path / "cache")
    argv = json.loads(log.read_text())
    assert built and engine.is_file() and not any("plugins" in a or "evil" in a for a in argv)
    assert any(a.startswith("--minShapes=image:") for a in argv) and "--int8" in argv
    trt["details"]["workspace_mib"] = "1024; rm -rf /"
    _resign(copy, manifest)
    with pytest.raises(EdgesegError, match="workspace_mib"):
        ensure_engine(copy, Artifact.from_dict(_artifact(load_bundle(copy), "rtx-tensorrt-int8")), tmp_path / "cache2")
