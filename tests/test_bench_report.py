"""Consumers of an `edgeseg bench` result: the schema, the reader, the Markdown/terminal reports and the plot."""
from __future__ import annotations

import copy
import json

import pytest

from edgeseg.benchmark import schema
from edgeseg.benchmark.plot import plot_pareto
from edgeseg.benchmark.report import headline, markdown_report, pareto_front, print_bench_summary, write_reports
from edgeseg.benchmark.schema import RESULT_SCHEMA_VERSION, read_result, validate_result
from edgeseg.errors import EdgesegError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CASES = ["case_001", "case_004", "case_007"]
LABELS = ["organ", "lesion", "foreground"]


def _metrics(dice: float) -> dict:
    return {"dice": dice, "iou": dice / (2 - dice), "sensitivity": 0.95, "specificity": 0.999, "hd95": 3.5}


def _accuracy(dice: float, delta: float, agreement: float, changes: list[dict] | None = None) -> dict:
    return {"cases": len(CASES),
            "mean": {label: _metrics(dice) for label in LABELS},
            "hd95_undefined": {label: 0 for label in LABELS},
            "drift": {label: {"mean": delta, "low": delta - 0.0004, "high": delta + 0.0004, "n": len(CASES)}
                      for label in LABELS},
            "agreement": {label: agreement for label in LABELS},
            "worst_case": {label: {"case": "case_007", "delta": delta * 24} for label in LABELS},
            "structure_changes": changes or [],
            "per_case": {case: {label: _metrics(dice) for label in LABELS} for case in CASES}}


def _latency(p50: float) -> dict:
    def timing(batch: int) -> dict:
        ms = p50 * batch * 0.8
        return {"p50_ms": ms, "p90_ms": ms * 1.1, "p99_ms": ms * 1.3, "mean_ms": ms * 1.05, "min_ms": ms * 0.95,
                "batch": batch, "warmup": 5, "repeats": 30, "throughput_per_s": batch * 1000 / ms}

    return {"batch_1": {**timing(1), "p50_ms": p50, "throughput_per_s": 1000 / p50}, "batch_8": timing(8),
            "cold_start_s": 0.42, "peak_rss_mb": 310.0, "rounds": 2}


def _end_to_end(p50: float) -> dict:
    return {"cases": 3, "p50_ms": p50, "p90_ms": p50 * 1.2, "mean_ms": p50 * 1.1,
            "stages_ms": {"read": 5.0, "preprocess_postprocess": 8.0, "infer": p50 - 20, "write": 7.0},
            "infer_fraction": (p50 - 20) / p50}


def _artifact(name: str, origin: str, runtime: str, precision: str, status: str = "measured", *,
              profile: str | None = None, accuracy: dict | None = None, p50: float | None = None,
              e2e: float | None = None, notes: list[str] | None = None) -> dict:
    role = "baseline" if origin == "baseline" else "reference" if name == "torch-fp32" else "candidate"
    return {"name": name, "origin": origin, "role": role, "runtime": runtime, "precision": precision, "profile": profile,
            "device": "cuda" if runtime == "tensorrt" else "cpu", "description": f"{runtime} {precision}",
            "executed_precision": None if p50 is None else precision, "status": status, "notes": notes or [],
            "size_bytes": 6_700_000 if precision == "fp32" else 1_900_000, "params": 1_660_000, "macs": 2_100_000_000,
            "accuracy": accuracy, "latency": _latency(p50) if p50 else None,
            "end_to_end": _end_to_end(e2e) if e2e else None,
            "ratios": {"model_speedup_vs_reference": 25.0 / p50 if p50 else None,
                       "e2e_speedup_vs_reference": 60.0 / e2e if e2e else None}}


def _main_table(markdown: str) -> dict[str, list[str]]:
    """{artifact: its cells} from the "## Results" table of a report."""
    section = markdown.split("## Results")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("| ")]
    return {row[0]: row for row in rows[1:]}


@pytest.fixture
def result() -> dict:
    vanished = {"case": "case_007", "label": "lesion", "change": "vanished", "reference_voxels": 41,
                "artifact_voxels": 0}
    return {
        "schema": "edgeseg-bench", "schema_version": 1, "created": "2026-11-27T08:00:00+00:00",
        "edgeseg_version": "0.1.0", "command": "edgeseg bench bundle/ --data ds", "seconds": 123.4,
        "bundle": {"path": "/tmp/bundles/chest_bundle", "manifest_sha256": "cd" * 32,
                   "source_checkpoint": {"name": "chest.ckpt", "sha256": "ab" * 32},
                   "verification": {"ok": False, "problems": ["arm64/model.onnx: sha256 mismatch"]}, "pruning": None},
        "data": {"dataset": "Dataset002_ChestXrayLungs", "root": "/data/ds", "split": "val", "cases": CASES,
                 "labelled": True, "fingerprint": "ef" * 8, "calibration_overlap": []},
        "model": {"arch": "hybrid", "spatial_dims": 2, "in_channels": 1, "labels": ["background", "organ", "lesion"],
                  "input_size": [256, 256], "macs": 2_100_000_000, "params": 1_660_000},
        "settings": {"threads": 2, "repeats": 30, "rounds": 2, "warmup": 5, "batch_sizes": [1, 8], "e2e_cases": 3,
                     "backends": ["openvino", "onnxruntime", "tensorrt"], "compare_baselines": True,
                     "headline_label": "foreground"},
        "device": {"cpu": {"model": "AMD EPYC 9R14", "arch": "x86_64", "isa": ["avx2", "avx512f", "avx512_vnni"],
                           "logical_cores": 2, "usable_cores": 2},
                   "ram_gib": 23.4, "os": "Linux 6.1", "python": "3.11.9",
                   "versions": {"torch": "2.13.0", "openvino": "2025.1", "tensorrt": None},
                   "threads": 2, "gpu": None, "jetson": None},
        "reference": "torch-fp32", "notes": [],
        "artifacts": [
            _artifact("torch-fp32", "bundle", "torch", "fp32", accuracy=_accuracy(0.9000, 0.0, 1.0), p50=25.0,
                      e2e=60.0),
            _artifact("x86-avx512-openvino-int8", "bundle", "openvino", "int8", profile="x86-avx512",
                      accuracy=_accuracy(0.8995, -0.0005, 0.9912, [vanished]), p50=10.0, e2e=40.0,
                      notes=["per-channel weights, 300 calibration images"]),
            _artifact("baseline:ort-quantize-static-defaults", "baseline", "onnxruntime", "int8",
                      accuracy=_accuracy(0.8700, -0.0300, 0.9500), p50=25.0, e2e=50.0),
            _artifact("jetson-orin-tensorrt-int8", "bundle", "tensorrt", "int8", "accuracy_only",
                      profile="jetson-orin", accuracy=_accuracy(0.8990, -0.0010, 0.9900),
                      notes=["QDQ ONNX checked on ONNX Runtime CPU; no TensorRT here"]),
            _artifact("arm64-onnxruntime-int8", "bundle", "onnxruntime", "int8", "refused", profile="arm64",
                      notes=["arm64/model.onnx failed sha256 verification"]),
        ],
    }


@pytest.fixture
def unlabelled(result) -> dict:
    result["data"]["labelled"] = False
    for artifact in result["artifacts"]:
        if acc := artifact["accuracy"]:
            acc.update(mean=None, drift=None, worst_case=None, per_case={}, hd95_undefined={})
    return result


def test_realistic_result_validates(result, unlabelled):
    assert validate_result(result) == []
    assert validate_result(unlabelled) == []
    later = copy.deepcopy(result)  # a later version-1 writer may add keys anywhere
    later["notes"] = ["GPU baselines skipped: no CUDA GPU"]
    later["artifacts"][1].update(energy_j=0.3)
    later["artifacts"][1]["latency"]["batch_1"]["p999_ms"] = 30.0
    assert validate_result(later) == []
    assert "- GPU baselines skipped: no CUDA GPU" in markdown_report(later)
    assert headline(result) == "foreground"
    assert schema.load_schema()["properties"]["schema"]["const"] == schema.RESULT_SCHEMA_NAME


def test_broken_results_yield_readable_problems(result):
    missing = copy.deepcopy(result)
    del missing["settings"]
    assert any("'settings' is a required property" in p for p in validate_result(missing))

    bad_status = copy.deepcopy(result)
    bad_status["artifacts"][1]["status"] = "fast"
    assert any(p.startswith("artifacts[1] (x86-avx512-openvino-int8).status: 'fast' is not one of")
               for p in validate_result(bad_status))

    nan = copy.deepcopy(result)
    nan["artifacts"][1]["latency"]["batch_1"]["p50_ms"] = float("nan")
    assert any("latency.batch_1.p50_ms: nan is not allowed" in p for p in validate_result(nan))

    twice = copy.deepcopy(result)
    twice["artifacts"][2]["name"] = "torch-fp32"
    twice["reference"] = "torch-bf16"
    problems = validate_result(twice)
    assert any("appears 2 times" in p for p in problems) and any("reference" in p for p in problems)


def test_without_jsonschema_only_top_level_is_checked(result, monkeypatch):
    def no_jsonschema():
        raise ImportError("jsonschema")

    monkeypatch.setattr(schema, "_validator", no_jsonschema)
    result["artifacts"][1]["status"] = "fast"  # not seen without jsonschema
    assert validate_result(result) == []
    del result["device"]
    result["schema_version"] = "1"
    assert validate_result(result) == ["(top level): 'device' is a required property",
                                       "schema_version: '1' is not a positive integer"]


def test_read_result_refuses_what_it_cannot_read(result, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(result))
    assert read_result(good) == result

    cases = {"broken.json": "{\"schema\": ", "other.json": json.dumps({"schema": "something-else"}),
             "newer.json": json.dumps({**result, "schema_version": RESULT_SCHEMA_VERSION + 1}),
             "invalid.json": json.dumps({**result, "artifacts": [], "seconds": -1})}
    expected = {"broken.json": "not valid JSON", "other.json": "not an edgeseg-bench result",
                "newer.json": "is newer than this edgeseg reads", "invalid.json": "(and 1 more problem)"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(EdgesegError) as error:
            read_result(tmp_path / name)
        message = str(error.value)
        assert name in message and expected[name] in message and "\n" not in message
    with pytest.raises(EdgesegError, match="missing.json"):
        read_result(tmp_path / "missing.json")


def test_pareto_front():
    points = [("a", 10.0, 0.90), ("b", 5.0, 0.85), ("c", 20.0, 0.88), ("d", 5.0, 0.80), ("e", 30.0, 0.95),
              ("no-latency", None, 0.99), ("nan", float("nan"), 0.99)]
    assert pareto_front(points) == ["b", "a", "e"]
    assert pareto_front([("x", 1.0, 0.5), ("twin", 1.0, 0.5)]) == ["x", "twin"]  # equal points both stay
    assert pareto_front([]) == []


def test_markdown_report_numbers(result):
    text = markdown_report(result)
    rows = _main_table(text)
    assert rows["x86-avx512-openvino-int8"] == [
        "x86-avx512-openvino-int8", "candidate", "int8", "1.90", "0.8995", "−0.05 [−0.09, −0.01]", "0.9912",
        "case_007 −1.2", "1/0", "3.50", "10.0", "2.50×", "125.0", "40.0", "1.50×", "0.42", "310"]
    assert rows["torch-fp32"][5] == "reference" and rows["torch-fp32"][11] == "1.00×"
    assert rows["baseline:ort-quantize-static-defaults"][10:15] == ["25.0", "1.00×", "50.0", "50.0", "1.20×"]
    trt = rows["jetson-orin-tensorrt-int8 (accuracy only)"]
    assert trt[4] == "0.8990" and trt[10:] == ["—"] * 7
    assert rows["arm64-onnxruntime-int8 (refused: sha256)"][4:] == ["—"] * 13
    # against the baseline: 25 / 10 ms model, 50 / 40 ms end to end, (0.8995 - 0.87) Dice
    assert ("| x86-avx512-openvino-int8 | baseline:ort-quantize-static-defaults | 2.50× | 1.25× | +2.95 |"
            in text)
    assert "jetson-orin-tensorrt-int8 | baseline:" not in text  # no latency, nothing to compare
    assert "| x86-avx512-openvino-int8 | lesion | 0.8995 |" in text  # per-label table
    assert "lesion **vanished** in `case_007`" in text
    assert "per-channel weights, 300 calibration images" in text and "sha256 mismatch" in text
    assert "AMD EPYC 9R14 (x86_64; avx2, avx512f, avx512_vnni) · 2 threads" in text
    assert "bootstrap 95 % confidence interval over cases" in text and "own process" in text
    assert "-0." not in text  # one minus sign throughout: the Unicode one


def test_unlabelled_result_renders(unlabelled, tmp_path):
    unlabelled["device"].update(gpu={"name": "NVIDIA H100", "driver": "550.54", "cuda": "12.4", "tensorrt": None},
                                jetson={"model": "NVIDIA Jetson AGX Orin", "l4t_release": "R36.4", "power_mode": None})
    change = unlabelled["artifacts"][1]["accuracy"]["structure_changes"][0]
    unlabelled["artifacts"][1]["accuracy"]["structure_changes"] = [{**change, "case": f"c{i}"} for i in range(25)]
    assert validate_result(unlabelled) == []
    text = markdown_report(unlabelled)
    assert "no labels: agreement only" in text
    assert "· GPU NVIDIA H100 (driver 550.54, CUDA 12.4) · NVIDIA Jetson AGX Orin, R36.4" in text
    assert "**vanished** in `c19`" in text and "`c20`" not in text and "… and 5 more" in text
    assert _main_table(text)["x86-avx512-openvino-int8"][4:10] == ["—", "—", "0.9912", "—", "25/0", "—"]
    assert "| x86-avx512-openvino-int8 | baseline:ort-quantize-static-defaults | 2.50× | 1.25× | — |" in text
    assert plot_pareto(unlabelled, tmp_path / "u.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_and_write_reports(result, tmp_path):
    paths = write_reports(result, tmp_path / "out" / "bench.json")
    assert set(paths) == {"json", "markdown", "png"}
    assert read_result(paths["json"]) == result
    assert paths["markdown"].read_text(encoding="utf-8").startswith("# edgeseg bench: `chest_bundle`")
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md", "bench.png"]

    for artifact in result["artifacts"]:  # nothing timed: no plot, no crash
        artifact.update(latency=None, end_to_end=None)
    assert plot_pareto(result, tmp_path / "none.png") is None
    result["artifacts"][1]["latency"] = _latency(10.0)  # one panel empty, the other with a single point
    assert plot_pareto(result, tmp_path / "one.png").read_bytes().startswith(PNG_MAGIC)


def test_terminal_summary(result, capsys):
    print_bench_summary(result)
    out = capsys.readouterr().out
    assert "ov-int8 = x86-avx512-openvino-int8" in out and "−0.05 [−0.09, −0.01]" in out
    assert "vs baseline" not in out  # the pairwise speed-ups are in the Markdown; the terminal ends with the verdict
    assert "refused" in out and "vanished" in out
    assert "breaks a limit: x86-avx512-openvino-int8: 1 structure(s) of the reference masks vanished" in out
    assert "breaks a limit: baseline:ort-quantize-static-defaults: organ mean −3.00 pts" in out
