"""``bench --profile``: per-layer times from each runtime's own profiler, on real ONNX Runtime and OpenVINO."""
import numpy as np

from edgeseg.benchmark.profile import profile_artifacts, profile_section
from edgeseg.bundle import load_bundle, manifest_artifacts
from edgeseg.targets.onnxruntime_backend import ort_layer_times


def test_every_runtime_artifact_gets_its_layers_timed_by_its_own_profiler(bundle):
    manifest = load_bundle(bundle)
    artifacts = manifest_artifacts(manifest)
    spec_size = manifest["preprocessing"]["size"] if "preprocessing" in manifest else None
    sample = np.random.default_rng(0).random((1, 1, *(spec_size or [128, 128])), dtype=np.float32)
    profile = profile_artifacts(bundle, artifacts, sample, threads=2, runs=5)
    runtimes = {a.name: a.runtime for a in artifacts}
    assert set(profile) == {n for n, r in runtimes.items() if r != "torch"} and profile
    for name, p in profile.items():
        if runtimes[name] == "tensorrt":  # not installable here: said, not faked
            assert p == {"error": "tensorrt: no per-layer profiler in edgeseg for this runtime"}
            continue
        assert "error" not in p, p
        assert p["layers"] > 5 and p["total_ms"] > 0
        assert abs(sum(o["share"] for o in p["by_op"]) - 1) < 0.01
        assert p["top"] == sorted(p["top"], key=lambda r: -r["ms"])
        if runtimes[name] == "openvino":  # the kernel OpenVINO chose, e.g. brgconv_avx512_amx_I8
            assert any("I8" in e["exec"] or "i8" in e["exec"].lower() for e in p["by_exec"]) or "int8" not in name
    lines = profile_section({"profile": profile})
    assert lines[0].startswith("## Where the time goes") and any("| layer | op |" in line for line in lines)


def test_the_onnx_runtime_trace_counts_only_runs_after_the_warmup():
    trace = [{"cat": "Session", "name": "model_run", "ts": t} for t in (0, 100, 200)]
    trace += [{"cat": "Node", "name": "conv_kernel_time", "ts": t + 1, "dur": d,
               "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"}} for t, d in ((0, 9000), (100, 1000),
                                                                                             (200, 3000))]
    rows = ort_layer_times(trace, warmup=1)
    assert rows == [{"layer": "conv", "op": "Conv", "exec": "CPUExecutionProvider", "ms": 2.0}]
