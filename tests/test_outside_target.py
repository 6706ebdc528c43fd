"""A new target is one file: ``ort-alt`` — ONNX Runtime with an execution-provider list of its own — is defined
here, outside the package, registered with the public call, with its profile written in a temporary folder;
``edgeseg.compress`` builds it, ``edgeseg.bench`` measures it (latency in worker processes too), ``infer`` and
``bundle.predictor`` run it, with no edit in edgeseg. And a profile's misspelt ``[options]`` key is refused in one
line, the registry's bookkeeping holds, ``Artifact.from_dict`` round-trips."""
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeseg
from edgeseg.demo import default_checkpoint
from edgeseg.errors import EdgesegError
from edgeseg.targets import Artifact, find_target, get_target, load_profile, register_target, unregister_target
from edgeseg.targets.onnxruntime_backend import OnnxRuntimeTarget, OrtPredictor
from edgeseg.targets.registry import ENV, default_targets, infer_order, target_names

PROVIDERS = ["CPUExecutionProvider"]  # on a GPU machine, e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"]
PROFILE = '''description = "ONNX Runtime INT8 with its own execution providers (a target from outside edgeseg)"
target = "ort-alt"
precision = "int8"
device = "cpu"
threads = 1
[shapes]
batch = [1, 1, 2]
[options]
calibration_method = "minmax"
providers = ["CPUExecutionProvider"]
'''


class OrtAltTarget(OnnxRuntimeTarget):
    """ONNX Runtime's QDQ INT8, run with the execution providers its profile names (recorded in the artifact)."""

    name = "ort-alt"
    aliases = ("ortalt",)
    default_profiles = {"int8": "ort-alt-int8"}
    default = False                 # built when asked for, not by a plain `compress`
    infer_preference = 90           # after edgeseg's own for backend="auto"
    options = {**OnnxRuntimeTarget.options, "providers": list}

    def build(self, request) -> Artifact:
        artifact = super().build(request)  # runtime=self.name: the artifact is ort-alt's
        artifact.details["providers"] = request.merged_options().get("providers", PROVIDERS)
        return artifact

    def load(self, bundle_dir, artifact, threads=None) -> OrtPredictor:
        from edgeseg.bundle.members import artifact_bytes

        model = (artifact.prepared["model"].read_bytes() if "model" in artifact.prepared
                 else artifact_bytes(bundle_dir, artifact, "model"))
        return OrtPredictor(model, artifact.precision, threads=threads, name=artifact.files["model"],
                            providers=artifact.details["providers"])

    def prepare(self, bundle_dir, artifact, cache) -> Artifact:
        """What a device-specific target does on first use (TensorRT builds its engine): here, a copy in ``cache``."""
        from edgeseg.bundle.members import artifact_bytes

        cache.mkdir(parents=True, exist_ok=True)
        (cache / "prepared.onnx").write_bytes(artifact_bytes(bundle_dir, artifact, "model"))
        return dataclasses.replace(artifact, prepared={"model": cache / "prepared.onnx"})

    def workload_runner(self, path, threads, rank) -> OrtPredictor:
        return OrtPredictor(path, "fp32", threads=threads, providers=PROVIDERS)


@pytest.fixture
def ort_alt(tmp_path, monkeypatch):
    """``ort-alt`` registered and its profile findable for one test; unregistered (and unexported) after it."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "ort-alt-int8.toml").write_text(PROFILE)
    monkeypatch.setenv("EDGESEG_PROFILES", str(profiles))
    register_target(OrtAltTarget)
    yield get_target("ort-alt")
    unregister_target("ort-alt")
    assert find_target("ort-alt") is None and "OrtAltTarget" not in os.environ.get(ENV, "")


def _image(phantom_demo) -> np.ndarray:
    return np.asarray(Image.open(phantom_demo / "imagesTr" / "phantom_0003_0000.png"))[None]


def test_compress_bench_and_infer_use_a_target_registered_from_outside(ort_alt, phantom_demo, tmp_path):
    from edgeseg.infer import InferConfig, run_infer

    bundle = edgeseg.compress(default_checkpoint(), calibration=phantom_demo, targets="ortalt", eval_data=phantom_demo,
                              out=tmp_path / "b", calib_size=8, eval_cases=2, latency_repeats=3, threads=1)
    artifact = next(a for a in bundle.manifest["artifacts"] if a["runtime"] == "ort-alt")
    assert artifact["name"] == "ort-alt-int8" and artifact["precision"] == "int8"
    assert artifact["details"]["providers"] == PROVIDERS and artifact["details"]["qdq_pairs"] > 0
    assert artifact["accuracy"]["cases"] == 2 and artifact["latency"]["p50_ms"] > 0  # timed in a worker process
    assert artifact["executed_precision"] == "int8 (CPUExecutionProvider)"
    assert bundle.verify() == [] and Artifact.from_dict(artifact).to_dict() == artifact
    assert bundle.manifest["tool_versions"]["onnxruntime"]

    result = edgeseg.bench(bundle, phantom_demo, max_cases=2, backends="ort-alt", threads=1, repeats=2, rounds=1,
                           warmup=1, batch_size=0, e2e_cases=0)
    measured = {a["name"]: a for a in result.artifacts}
    assert measured["ort-alt-int8"]["latency"]["batch_1"]["p50_ms"] > 0
    assert "ort-alt" in result.data["workload"]["by_runtime"]  # the fixed workload on its own runtime too

    predictor = bundle.predictor(backend="ort-alt")
    assert (predictor.runtime, predictor.artifact) == ("ort-alt", "ort-alt-int8")
    mask = predictor.predict(_image(phantom_demo))
    reference = bundle.predictor(backend="onnxruntime").predict(_image(phantom_demo))  # the FP32 ONNX
    assert mask.shape == (128, 128) and (mask == reference).mean() > 0.95
    assert bundle.predictor().runtime != "ort-alt"  # auto: edgeseg's own runtimes come first (preference 90)
    summary = run_infer(InferConfig(bundle=bundle.path, inputs=[phantom_demo / "imagesTr" / "phantom_0003_0000.png"],
                                    out=tmp_path / "masks", backend="ort-alt"))
    assert summary["artifact"] == "ort-alt-int8" and not summary["failed"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "phantom_0003.png")), mask)
    summary = run_infer(InferConfig(bundle=bundle.path, inputs=[phantom_demo / "imagesTr" / "phantom_0003_0000.png"],
                                    out=tmp_path / "cached", backend="ort-alt", engine_cache=tmp_path / "cache"))
    assert (tmp_path / "cache" / "prepared.onnx").is_file() and not summary["failed"]  # the target's prepare hook ran
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cached" / "phantom_0003.png")), mask)


def test_a_misspelt_profile_option_is_refused_in_one_line(ort_alt, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('target = "onnxruntime"\nprecision = "int8"\n[options]\ncalibraton_method = "minmax"\n')
    with pytest.raises(EdgesegError) as err:
        load_profile(bad)
    message = str(err.value)
    assert "\n" not in message and "'calibraton_method'" in message and "did you mean 'calibration_method'" in message
    assert "accepted: activation_type, calibration_cache, calibration_method" in message
    bad.write_text('target = "tensorrt"\nprecision = "int8"\n[options]\nworkspace_mib = "big"\n')
    with pytest.raises(EdgesegError, match="workspace_mib must be int, got 'big'"):
        load_profile(bad)
    bad.write_text(PROFILE.replace("providers =", "provider ="))  # an outside target's schema is checked the same way
    with pytest.raises(EdgesegError, match="unknown \\[options\\] key 'provider' for target ort-alt"):
        load_profile(bad)
    assert load_profile("ort-alt-int8").options["providers"] == PROVIDERS


def test_the_registry_is_what_every_lookup_reads(ort_alt):
    assert get_target("ORTALT") is ort_alt and "ort-alt" in target_names()
    assert infer_order()[-1] == "ort-alt" and "ort-alt" not in default_targets()
    assert default_targets() == ["onnxruntime", "openvino", "tensorrt"]
    assert os.environ[ENV].endswith("test_outside_target.py:OrtAltTarget")  # what worker processes load
    with pytest.raises(EdgesegError, match="ort-alt, ortalt already registered"):
        register_target(type("Other", (OrtAltTarget,), {}))
    with pytest.raises(EdgesegError, match="not a named edgeseg.targets.Target"):
        register_target(object())


def test_artifact_round_trips_through_its_manifest_form():
    entry = {"name": "x86-onnxruntime-int8", "runtime": "onnxruntime", "precision": "int8",
             "files": {"model": "x86-onnxruntime-int8.onnx"}, "profile": "x86-onnxruntime-int8", "device": "cpu",
             "float_nodes": ["/head/Conv"], "details": {"qdq_pairs": 12},
             "hashes": {"model": {"path": "x86-onnxruntime-int8.onnx", "sha256": "0" * 64, "bytes": 3}},
             "latency": {"p50_ms": 1.5}, "size_bytes": 3}
    artifact = Artifact.from_dict(entry)
    assert artifact.details == {"qdq_pairs": 12} and artifact.recorded["size_bytes"] == 3
    assert artifact.to_dict() == entry and list(artifact.to_dict()) == list(entry)
    assert Artifact.from_dict(artifact.to_dict()) == artifact and artifact.hashes == entry["hashes"]
    outside = Artifact.from_dict(entry, root="/elsewhere")  # a fact of this process: never in the manifest form
    assert outside.folder("bundle") == Path("/elsewhere") and outside.to_dict() == entry
    with pytest.raises(EdgesegError, match="missing files, profile"):
        Artifact.from_dict({"name": "a", "runtime": "torch", "precision": "fp32"})


def test_a_registered_target_s_short_name_is_used_in_tables():
    from edgeseg.benchmark.tables import short_names
    from edgeseg.targets.base import Target

    class EdgeTpu(Target):
        name, short_name = "edgetpu", "tpu"

    register_target(EdgeTpu)
    try:
        assert short_names(["coral-edgetpu-int8", "x86-onnxruntime-int8"]) == {"coral-edgetpu-int8": "tpu-int8",
                                                                              "x86-onnxruntime-int8": "ort-int8"}
    finally:
        unregister_target("edgetpu")
