"""`edgeseg bench` on the phantom INT8 bundle with real ONNX Runtime, OpenVINO, NNCF and PyTorch."""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.benchmark.harness import BenchConfig, first_model_input, run_bench
from edgeseg.benchmark.schema import validate_result
from edgeseg.cli import app
from edgeseg.data import write_phantom_dataset

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _by_name(result):
    return {a["name"]: a for a in result["artifacts"]}


@pytest.fixture(scope="module")
def result(bundle, phantom_demo):
    return run_bench(BenchConfig(bundle=bundle, data=phantom_demo, max_cases=6, repeats=4, rounds=2, warmup=1,
                                 batch_size=4, e2e_cases=2, threads=2))


def test_result_is_valid_and_complete(result, phantom_demo):
    assert validate_result(result) == []
    json.dumps(result, allow_nan=False)  # no NaN/inf anywhere
    assert result["reference"] == "torch-fp32" and result["data"]["labelled"]
    assert len(result["data"]["cases"]) == 6 and result["data"]["calibration_overlap"] == []
    assert result["settings"]["threads"] == 2 and result["settings"]["batch_sizes"] == [1, 4]
    assert result["device"]["cpu"]["model"] and result["model"]["labels"] == ["background", "organ", "lesion"]
    arts = _by_name(result)
    assert arts["torch-fp32"]["role"] == "reference" and arts["x86-onnxruntime-fp32"]["role"] == "baseline"
    assert arts["x86-avx512-openvino-int8"]["role"] == "candidate"
    assert arts["rtx-tensorrt-int8"]["status"] == "accuracy_only" and arts["rtx-tensorrt-int8"]["latency"] is None
    for name in ("torch-fp32", "x86-onnxruntime-fp32", "x86-onnxruntime-int8", "x86-avx512-openvino-int8"):
        assert arts[name]["status"] == "measured", arts[name]["notes"]


def test_accuracy_per_case_and_drift(result):
    arts = _by_name(result)
    ref, ov = arts["torch-fp32"]["accuracy"], arts["x86-avx512-openvino-int8"]["accuracy"]
    assert set(ref["per_case"]) == set(result["data"]["cases"])
    case = next(iter(ref["per_case"].values()))
    assert set(case) == {"organ", "lesion", "foreground"}
    assert set(case["organ"]) == {"dice", "iou", "sensitivity", "specificity", "hd95"}
    assert ref["drift"]["organ"]["mean"] == 0 and ref["agreement"]["organ"] == pytest.approx(1.0)
    for label in ("organ", "lesion", "foreground"):
        d = ov["drift"][label]
        assert d["low"] <= d["mean"] <= d["high"] and d["n"] == 6
        per_case = [ov["per_case"][c][label]["dice"] - ref["per_case"][c][label]["dice"] for c in ov["per_case"]]
        assert d["mean"] == pytest.approx(np.mean(per_case))
        assert ov["worst_case"][label]["delta"] == pytest.approx(min(per_case))
        assert ov["mean"][label]["dice"] == pytest.approx(np.mean([ov["per_case"][c][label]["dice"] for c in ov["per_case"]]))
    assert 0.9 < ov["agreement"]["organ"] <= 1.0


def test_latency_throughput_and_end_to_end(result):
    arts = _by_name(result)
    for name in ("torch-fp32", "x86-avx512-openvino-int8"):
        lat, e2e = arts[name]["latency"], arts[name]["end_to_end"]
        b1, b4 = lat["batch_1"], lat["batch_4"]
        assert b1["p50_ms"] <= b1["p90_ms"] <= b1["p99_ms"] and b1["repeats"] == 4 and b4["batch"] == 4
        assert b4["throughput_per_s"] == pytest.approx(4e3 / b4["p50_ms"])
        assert lat["cold_start_s"] > 0 and lat["peak_rss_mb"] > 50
        stages = e2e["stages_ms"]
        assert e2e["cases"] == 2 and all(v >= 0 for v in stages.values())
        assert sum(stages.values()) == pytest.approx(e2e["mean_ms"], rel=0.05)
        assert 0 < e2e["infer_fraction"] < 1
        ref = arts["torch-fp32"]
        assert arts[name]["ratios"]["model_speedup_vs_reference"] == pytest.approx(
            ref["latency"]["batch_1"]["p50_ms"] / b1["p50_ms"])
    assert arts["torch-fp32"]["ratios"]["e2e_speedup_vs_reference"] == 1.0
    assert arts["x86-avx512-openvino-int8"]["executed_precision"].startswith("u8") or "i8" in arts["x86-avx512-openvino-int8"]["executed_precision"]


def test_cli_writes_json_markdown_and_plot(bundle, phantom_demo, tmp_path):
    out = tmp_path / "r.json"
    res = _run("bench", bundle, "--data", phantom_demo, "--cases", 3, "--backends", "openvino", "--repeats", 2,
               "--rounds", 1, "--warmup", 1, "--batch-size", 2, "--e2e-cases", 1, "--out", out)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    assert {a["runtime"] for a in result["artifacts"]} == {"torch", "openvino"}  # the reference always runs
    assert "x86-avx512-openvino-int8" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _run("bench", bundle, "--data", phantom_demo, "--out", out).exit_code == 2  # exists, no --force


def test_tampered_artifact_is_refused_and_the_rest_measured(bundle, phantom_demo, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    with open(copy / "x86-avx512-openvino-int8.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    out = tmp_path / "r.json"
    res = _run("bench", copy, "--data", phantom_demo, "--cases", 2, "--no-latency", "--out", out)
    assert res.exit_code == 3, res.output
    assert "failed sha256 verification" in res.output
    arts = _by_name(json.loads(out.read_text()))
    assert arts["x86-avx512-openvino-int8"]["status"] == "refused"
    assert arts["x86-avx512-openvino-int8"]["accuracy"] is None
    assert arts["x86-onnxruntime-int8"]["accuracy"]["cases"] == 2


def test_missing_runtime_is_reported_and_the_rest_measured(bundle, phantom_demo, monkeypatch):
    from edgeseg.targets import get_target

    monkeypatch.setattr(type(get_target("openvino")), "missing", lambda self, build=False: "Python package 'openvino' is not installed")
    result = run_bench(BenchConfig(bundle=bundle, data=phantom_demo, max_cases=2, latency=False))
    arts = _by_name(result)
    assert arts["x86-avx512-openvino-int8"]["status"] == "not_measured"
    assert "openvino" in arts["x86-avx512-openvino-int8"]["notes"][0]
    assert arts["x86-onnxruntime-int8"]["status"] == "measured" and arts["x86-onnxruntime-int8"]["accuracy"]


def test_data_that_does_not_fit_is_one_line_error(bundle, tmp_path):
    two_channel = write_phantom_dataset(tmp_path / "ds", cases=3, size=32, channels=2, seed=1)
    res = _run("bench", bundle, "--data", two_channel, "--out", tmp_path / "r.json")
    assert res.exit_code == 2 and "channels" in res.output and "Traceback" not in res.output
    res = _run("bench", tmp_path, "--data", two_channel, "--out", tmp_path / "r.json")
    assert res.exit_code == 2 and "not an edgeseg bundle" in res.output


def test_unlabelled_data_gets_agreement_only(bundle, phantom_demo, tmp_path):
    data = tmp_path / "unlabelled"
    shutil.copytree(phantom_demo, data, ignore=shutil.ignore_patterns("labelsTr"))
    result = run_bench(BenchConfig(bundle=bundle, data=data, split="all", max_cases=3, latency=False))
    assert validate_result(result) == [] and not result["data"]["labelled"]
    ov = _by_name(result)["x86-avx512-openvino-int8"]["accuracy"]
    assert ov["mean"] is None and ov["drift"] is None and ov["per_case"] == {}
    assert 0.9 < ov["agreement"]["organ"] <= 1.0


def test_first_model_input_is_what_inference_feeds(bundle):
    from edgeseg.checkpoint import read_spec

    spec = read_spec(bundle / "torch-fp32.ckpt")
    image = np.random.default_rng(0).random((1, 90, 70)).astype(np.float32) * 255
    sample = first_model_input(spec, image)
    assert sample.shape == (1, 1, 128, 128)
    np.testing.assert_allclose(sample[0], spec.preprocessing(image))


@pytest.mark.slow
def test_compare_baselines_builds_and_measures_user_defaults(bundle, phantom_demo):
    result = run_bench(BenchConfig(bundle=bundle, data=phantom_demo, max_cases=3, repeats=2, rounds=1, warmup=1,
                                   batch_size=0, e2e_cases=1, compare_baselines=True, threads=2))
    assert validate_result(result) == []
    arts = _by_name(result)
    for name in ("baseline:torch-compile", "baseline:openvino-f32", "baseline:openvino-default",
                 "baseline:ort-quantize-static-defaults", "baseline:nncf-defaults"):
        assert arts[name]["status"] == "measured", arts[name]["notes"]
        assert arts[name]["origin"] == "baseline" and arts[name]["latency"]["batch_1"]["p50_ms"] > 0
        assert arts[name]["accuracy"]["agreement"]["organ"] > 0.9
    assert "f32" in arts["baseline:openvino-f32"]["executed_precision"]
    assert arts["baseline:ort-quantize-static-defaults"]["precision"] == "int8"
    assert arts["baseline:neural-compressor-int8"]["status"] == "not_measured"


def test_3d_volumes_run_by_sliding_window_with_spacing(phantom3d, tmp_path):
    """A 3D model trained on patches smaller than the volumes: bench scores whole volumes (sliding window)."""
    from edgeseg.checkpoint import read_spec
    from edgeseg.data.nnunet import NnUNetDataset

    ckpt = tmp_path / "m3d.ckpt"
    res = _run("train", "--data", phantom3d, "--out", ckpt, "--size", 16, "--resize", "pad", "--epochs", 1,
               "--max-steps", 1, "--batch-size", 2, "--arch", "unet3d", "--arch-arg", "base=4", "--arch-arg", "depth=2")
    assert res.exit_code == 0, res.output
    out = tmp_path / "b3d"
    res = _run("compress", ckpt, "--precision", "fp32", "--targets", "onnx,openvino", "--eval-data", phantom3d,
               "--latency-repeats", 2, "--out", out)
    assert res.exit_code == 0, res.output
    result = run_bench(BenchConfig(bundle=out, data=phantom3d, split="all", repeats=2, rounds=1, warmup=1,
                                   batch_size=2, e2e_cases=1, threads=2))
    assert validate_result(result) == []
    dataset = NnUNetDataset(phantom3d)
    case = dataset.load(result["data"]["cases"][0])
    window = read_spec(ckpt).preprocessing.size
    assert window == (16, 16, 16) and case.image.shape[1:] == (32, 32, 16)  # 4 overlapping windows per volume
    arts = _by_name(result)
    assert result["model"]["spatial_dims"] == 3
    assert set(arts) == {"torch-fp32", "x86-onnxruntime-fp32", "x86-openvino-fp32"}
    for a in arts.values():
        assert a["status"] == "measured", a["notes"]
        assert a["latency"]["batch_1"]["p50_ms"] > 0 and a["end_to_end"]["stages_ms"]["infer"] > 0
        assert a["accuracy"]["agreement"]["organ"] > 0.99  # FP32 everywhere: same masks up to float noise
    assert arts["x86-openvino-fp32"]["latency"]["batch_2"]["batch"] == 2


@pytest.mark.gpu
def test_gpu_baselines_run_on_cuda(bundle, phantom_demo):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("the PyTorch CUDA FP32/FP16 baselines need an NVIDIA GPU visible to PyTorch")
    result = run_bench(BenchConfig(bundle=bundle, data=phantom_demo, max_cases=2, repeats=4, rounds=1, warmup=1,
                                   batch_size=4, e2e_cases=1, compare_baselines=True))
    arts = _by_name(result)
    assert result["device"]["gpu"]["name"]
    for name in ("baseline:torch-cuda-fp32", "baseline:torch-cuda-fp16"):
        assert arts[name]["status"] == "measured", arts[name]["notes"]
        assert "cuda" in arts[name]["executed_precision"] and arts[name]["latency"]["batch_4"]["p50_ms"] > 0
        assert arts[name]["accuracy"]["agreement"]["organ"] > 0.95


def test_baselines_follow_backends_and_report_what_they_could_not_build(bundle, tmp_path):
    from edgeseg.benchmark.baselines import build_baselines
    from edgeseg.bundle import manifest_artifacts, read_manifest

    artifacts = manifest_artifacts(read_manifest(bundle))
    built, skipped = build_baselines(bundle, artifacts, artifacts[0], bundle / "x86-onnxruntime-fp32.onnx", None,
                                     tmp_path, cuda=False, model_size=(128, 128), runtimes={"openvino"})
    assert [b.name for b in built] == ["baseline:openvino-f32", "baseline:openvino-default"]
    assert all(b.runtime == "openvino" and b.recorded["origin"] == "baseline" and b.root == tmp_path for b in built)
    assert (tmp_path / built[0].files["model"]).is_file()
    assert [(s.name, s.recorded["status"]) for s in skipped] == [("baseline:nncf-defaults", "not_measured")]
    assert "calibration" in skipped[0].recorded["notes"][0]
