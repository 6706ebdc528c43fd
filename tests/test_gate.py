"""`edgeseg gate` on results derived from a real phantom bench run (edited copies for each failure mode)."""
import copy
import json
import re

import pytest
from typer.testing import CliRunner

from edgeseg.bench.harness import BenchConfig, run_bench
from edgeseg.bench.workload import WORKLOAD_NAME
from edgeseg.cli import app
from edgeseg.gate import device_class

INT8 = "x86-onnxruntime-int8"


@pytest.fixture(scope="module")
def result(bundle, phantom_demo):
    return run_bench(BenchConfig(bundle=bundle, data=phantom_demo, max_cases=4, repeats=6, rounds=2, warmup=1,
                                 batch_size=0, e2e_cases=0, threads=2, backends=["onnxruntime", "openvino"]))


@pytest.fixture(scope="module")
def steady(result):
    """The real result with every timing's rounds made equal: no noise band, so limits decide alone."""
    out = copy.deepcopy(result)
    for entry in [*out["artifacts"], out["workload"], *out["workload"]["by_runtime"].values()]:
        if entry.get("latency"):
            _scale(entry["latency"]["batch_1"], 1.0)
    return out


@pytest.fixture
def files(steady, tmp_path):
    """write(result_dict) → path; the baseline is written from the steady result."""
    counter = iter(range(1000))

    def write(res):
        path = tmp_path / f"r{next(counter)}.json"
        path.write_text(json.dumps(res))
        return path

    base = tmp_path / "baseline.json"
    assert _gate(write(steady), "--baseline", base, "--update-baseline").exit_code == 0
    return write, base


def _gate(*args):
    return CliRunner().invoke(app, ["gate", *[str(a) for a in args]])


def _flat(output: str) -> str:
    """The gate's table as one line: cell text wrapped over several lines reads on."""
    return re.sub(r"[│┃\s]+", " ", output)


def _artifact(res, name):
    return next(a for a in res["artifacts"] if a["name"] == name)


def _slow_down(res, name, factor, spread=None):
    _scale(_artifact(res, name)["latency"]["batch_1"], factor, spread)
    return res


def _scale(lat, factor, spread=None):
    for key in ("p50_ms", "p90_ms"):
        lat[key] *= factor
    p50 = lat["p50_ms"]
    lat["round_p50_ms"] = [p50] * 3 if spread is None else [p50 * (1 - spread), p50, p50 * (1 + spread)]


def test_the_result_carries_the_workload_and_round_medians(result):
    assert result["workload"]["name"] == WORKLOAD_NAME and result["workload"]["latency"]["batch_1"]["p50_ms"] > 0
    # timed on each runtime of the run: the torch reference, ONNX Runtime and OpenVINO artifacts
    by_runtime = result["workload"]["by_runtime"]
    assert set(by_runtime) == {"torch", "onnxruntime", "openvino"}
    assert all(w["latency"]["batch_1"]["p50_ms"] > 0 for w in by_runtime.values())
    assert len(_artifact(result, INT8)["latency"]["batch_1"]["round_p50_ms"]) == 2
    assert device_class(result).startswith(f"cpu-{result['device']['cpu']['arch']}-") and device_class(result).endswith("-2t")


def test_unchanged_result_passes(steady, files):
    write, base = files
    res = _gate(write(steady), "--baseline", base)
    assert res.exit_code == 0, res.output
    assert "gate passed" in res.output and INT8 in res.output


def test_latency_regression_fails_naming_artifact_metric_and_limit(steady, files):
    write, base = files
    res = _gate(write(_slow_down(copy.deepcopy(steady), INT8, 1.5)), "--baseline", base, "--mode", "absolute")
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and INT8 in res.output and "latency p50" in res.output and "+10%" in res.output


def test_noise_band_edge(steady, tmp_path):
    """A slowdown inside the measured run-to-run band is not a regression; beyond it, it is. Rounds at ±15 %
    of their median: σ = 1.4826 × 0.15 = 0.222, 3 rounds → band = 3 × 1.253 × 0.222 / √3 = 48.3 %."""
    (tmp_path / "steady.json").write_text(json.dumps(steady))
    base = tmp_path / "steady-baseline.json"
    assert _gate(tmp_path / "steady.json", "--baseline", base, "--update-baseline").exit_code == 0
    for factor, code in ((1.46, 0), (1.50, 1)):
        noisy = _slow_down(copy.deepcopy(steady), INT8, factor, spread=0.15)
        (tmp_path / "noisy.json").write_text(json.dumps(noisy))
        res = _gate(tmp_path / "noisy.json", "--baseline", base, "--mode", "absolute", "--max-latency-regression", "10%")
        assert res.exit_code == code, res.output
        assert "noise band 48.3%" in res.output
    assert "FAIL" in res.output


def test_relative_mode_absorbs_a_slower_runner(steady, files):
    write, base = files
    slower_machine = copy.deepcopy(steady)
    for a in slower_machine["artifacts"]:
        if a["latency"]:
            _slow_down(slower_machine, a["name"], 2.0)
    for workload in [slower_machine["workload"], *slower_machine["workload"]["by_runtime"].values()]:
        _scale(workload["latency"]["batch_1"], 2.0)
    path = write(slower_machine)
    assert _gate(path, "--baseline", base).exit_code == 0                       # default: ÷ workload on CPU
    assert _gate(path, "--baseline", base, "--mode", "reference").exit_code == 0
    assert _gate(path, "--baseline", base, "--mode", "absolute").exit_code == 1


def test_dice_regression_and_per_label_limits(steady, files):
    write, base = files
    worse = copy.deepcopy(steady)
    for stats in _artifact(worse, INT8)["accuracy"]["mean"].values():
        stats["dice"] -= 0.01  # one point
    path = write(worse)
    res = _gate(path, "--baseline", base)
    assert res.exit_code == 1 and "dice lesion" in res.output and "-1.00 pts" in res.output
    assert _gate(path, "--baseline", base, "--max-dice-drop", "organ=2,lesion=2,foreground=2").exit_code == 0
    assert _gate(path, "--baseline", base, "--max-dice-drop", "1.5,lesion=0.5").exit_code == 1
    res = _gate(path, "--baseline", base, "--max-dice-drop", "nodule=1")
    assert res.exit_code == 2 and "nodule" in res.output


def test_a_vanished_structure_fails_unless_allowed(steady, files):
    write, base = files
    vanished = copy.deepcopy(steady)
    case = vanished["data"]["cases"][0]
    _artifact(vanished, INT8)["accuracy"]["structure_changes"].append(
        {"case": case, "label": "lesion", "change": "vanished", "reference_voxels": 40, "artifact_voxels": 0})
    path = write(vanished)
    res = _gate(path, "--baseline", base)
    assert res.exit_code == 1 and f"{case}:lesion" in res.output
    assert _gate(path, "--baseline", base, "--allow-vanished", f"{case}:*").exit_code == 0


def test_missing_artifact_fails(steady, files):
    write, base = files
    fewer = copy.deepcopy(steady)
    fewer["artifacts"] = [a for a in fewer["artifacts"] if a["name"] != INT8]
    res = _gate(write(fewer), "--baseline", base)
    assert res.exit_code == 1 and "missing" in res.output


def test_schema_version_mismatch_is_unusable_input(steady, files, tmp_path):
    write, base = files
    newer = copy.deepcopy(steady)
    newer["schema_version"] = 2
    res = _gate(write(newer), "--baseline", base)
    assert res.exit_code == 2 and "schema_version 2" in res.output and "Traceback" not in res.output
    old_baseline = json.loads(base.read_text()) | {"schema_version": 99}
    other = tmp_path / "b99.json"
    other.write_text(json.dumps(old_baseline))
    assert _gate(write(steady), "--baseline", other).exit_code == 2
    assert _gate(write(steady), "--baseline", tmp_path / "none.json").exit_code == 2


def test_device_class_mismatch_is_refused_unless_told(steady, files):
    write, base = files
    other = copy.deepcopy(steady)
    other["device"]["cpu"]["isa"] = ["avx2"]
    path = write(other)
    res = _gate(path, "--baseline", base)
    assert res.exit_code == 2 and "device class" in res.output
    assert _gate(path, "--baseline", base, "--allow-device-mismatch").exit_code == 0


def test_other_cases_than_the_baseline_are_refused(steady, files):
    write, base = files
    other = copy.deepcopy(steady)
    other["data"]["fingerprint"] = "0" * 64
    res = _gate(write(other), "--baseline", base)
    assert res.exit_code == 2 and "other cases" in res.output


def test_repeated_runs_compare_medians(steady, files):
    write, base = files
    runs = [write(steady), write(_slow_down(copy.deepcopy(steady), INT8, 3.0)), write(steady)]
    assert _gate(*runs, "--baseline", base, "--mode", "absolute").exit_code == 0  # one outlier run of three


def test_junit_report_parses_with_failures_counted(steady, files, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    write, base = files
    xml = tmp_path / "gate.xml"
    res = _gate(write(_slow_down(copy.deepcopy(steady), INT8, 2.0)), "--baseline", base, "--mode", "absolute",
                "--junit", xml)
    assert res.exit_code == 1
    report = junitparser.JUnitXml.fromfile(str(xml))
    suite = next(iter(report))
    cases = list(suite)
    failed = [c for c in cases if c.result and any(isinstance(r, junitparser.Failure) for r in c.result)]
    assert suite.tests == len(cases) and suite.failures == len(failed) == 1
    assert failed[0].classname == f"edgeseg.gate.{INT8}" and "latency" in failed[0].name


def test_limits_file_and_baseline_dir(steady, files, tmp_path):
    write, _ = files
    path = write(steady)
    folder = tmp_path / "baselines"
    assert _gate(path, "--baseline-dir", folder, "--update-baseline").exit_code == 0
    assert (folder / f"{device_class(steady)}.json").is_file()
    limits = tmp_path / "gate.toml"
    limits.write_text('max_latency_regression = "5%"\nmetric = "p90"\n[max_dice_drop]\nlesion = 1.0\n')
    res = _gate(path, "--baseline-dir", folder, "--limits", limits)
    assert res.exit_code == 0 and "latency p90" in res.output
    limits.write_text("max_latency = 3\n")
    res = _gate(path, "--baseline-dir", folder, "--limits", limits)
    assert res.exit_code == 2 and "unknown keys" in res.output
    assert _gate(path, "--baseline-dir", tmp_path / "empty").exit_code == 2


def _insert_slow_ops(model_path, layers=6, channels=32):
    """Add a side branch of convolutions whose result is multiplied by zero and added to the logits: the
    masks stay exactly the same, every inference does more work."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    source, target = graph.input[0].name, graph.output[0].name
    in_channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    for node in graph.node:
        node.output[:] = ["logits_before_slow" if o == target else o for o in node.output]
    rng = np.random.default_rng(0)
    x, nodes = source, []
    for i in range(layers):
        w = rng.standard_normal((channels, in_channels if i == 0 else channels, 3, 3)).astype(np.float32) * 0.01
        graph.initializer.append(numpy_helper.from_array(w, f"slow_w{i}"))
        nodes += [helper.make_node("Conv", [x, f"slow_w{i}"], [f"slow_c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"slow_c{i}"], [f"slow_x{i}"])]
        x = f"slow_x{i}"
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "slow_zero"))
    nodes += [helper.make_node("ReduceMean", [x], ["slow_mean"], keepdims=0),
              helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", ["logits_before_slow", "slow_nothing"], [target])]
    graph.node.extend(nodes)
    onnx.save(model, str(model_path))


def test_real_gate_passes_an_unchanged_model_twice_and_catches_an_inserted_slowdown(bundle, phantom_demo, tmp_path):
    """The project's own gate in miniature: real bench runs, relative (÷ workload) mode, default limits, a broken
    limit confirmed by a second run."""
    import shutil

    from edgeseg.bench.schema import read_result
    from edgeseg.bundle import read_manifest, write_manifest

    def bench(bundle_dir, name):
        res = run_bench(BenchConfig(bundle=bundle_dir, data=phantom_demo, max_cases=3, repeats=50, rounds=5,
                                    warmup=3, batch_size=0, e2e_cases=0, threads=2, backends=["onnxruntime"]))
        (tmp_path / name).write_text(json.dumps(res))
        return read_result(tmp_path / name)

    def gate(bundle_dir, name):
        """As the project's CI gate: a broken limit is confirmed by one more run (``--every-run``)."""
        bench(bundle_dir, f"{name}.json")
        res = _gate(tmp_path / f"{name}.json", "--baseline", base)
        if res.exit_code == 1:
            bench(bundle_dir, f"{name}-confirm.json")
            res = _gate(tmp_path / f"{name}.json", tmp_path / f"{name}-confirm.json", "--baseline", base, "--every-run")
        return res

    first = bench(bundle, "first.json")
    base = tmp_path / "baseline.json"
    assert _gate(tmp_path / "first.json", "--baseline", base, "--update-baseline").exit_code == 0
    res = gate(bundle, "second")
    assert res.exit_code == 0, res.output

    slowed = tmp_path / "slowed.bundle"
    shutil.copytree(bundle, slowed)
    manifest = read_manifest(slowed)
    _insert_slow_ops(slowed / _artifact({"artifacts": manifest["artifacts"]}, INT8)["files"]["model"])
    write_manifest(slowed, manifest)
    res = gate(slowed, "slowed")
    assert res.exit_code == 1, res.output
    failed = [line for line in res.output.splitlines() if "FAIL" in line]
    assert failed and all(INT8 in line and "latency" in line for line in failed)  # same masks, only slower
    after = read_result(tmp_path / "slowed.json")
    ratio = (_artifact(after, INT8)["latency"]["batch_1"]["p50_ms"] / _artifact(first, INT8)["latency"]["batch_1"]["p50_ms"])
    assert ratio > 1.2


def test_example_ci_workflow_runs_compress_bench_gate_and_uploads_junit():
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    workflow = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs/ci/github-actions-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    commands = [s["run"].split()[:2] for s in steps if "run" in s]
    assert [c for c in commands if c[0] == "edgeseg"] == [["edgeseg", "compress"], ["edgeseg", "bench"], ["edgeseg", "gate"]]
    gate = next(s["run"] for s in steps if s.get("run", "").startswith("edgeseg gate"))
    assert "--junit build/gate.xml" in gate and "--baseline-dir" in gate
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and "build/gate.xml" in uploads[0]["with"]["path"] and uploads[0]["if"] == "always()"


def _workload_of(res, runtime):
    return res["workload"]["by_runtime"][runtime]["latency"]["batch_1"]


def test_each_artifact_is_divided_by_the_workload_of_its_own_runtime(steady, files):
    """A busy machine slows OpenVINO far more than ONNX Runtime: OpenVINO artifacts are judged against the
    OpenVINO workload of the same run, so that passes, while the same slowdown with an unchanged OpenVINO
    workload is a regression."""
    write, base = files
    ov = next(a["name"] for a in steady["artifacts"] if a["runtime"] == "openvino" and a["latency"])
    contended = _slow_down(copy.deepcopy(steady), ov, 1.5)
    _scale(_workload_of(contended, "openvino"), 1.5)
    assert _gate(write(contended), "--baseline", base).exit_code == 0
    res = _gate(write(_slow_down(copy.deepcopy(steady), ov, 1.5)), "--baseline", base)
    assert res.exit_code == 1 and ov in res.output


def test_every_run_needs_the_slowdown_to_reproduce(steady, files):
    write, base = files
    slow, steady_again = write(_slow_down(copy.deepcopy(steady), INT8, 1.5)), write(steady)
    res = _gate(slow, steady_again, "--baseline", base, "--every-run")
    assert res.exit_code == 0 and "run 2 of 2 within limits" in res.output
    res = _gate(slow, write(_slow_down(copy.deepcopy(steady), INT8, 1.4)), "--baseline", base, "--every-run")
    assert res.exit_code == 1 and "failed in all 2 runs" in _flat(res.output), res.output
    assert _gate(slow, slow, "--baseline", base).exit_code == 1


def test_a_baseline_divided_by_another_runtime_s_workload_is_not_compared_silently(steady, files, tmp_path):
    """A baseline written before per-runtime workloads divided everything by ONNX Runtime's: OpenVINO artifacts
    fall back to ÷ FP32 reference, the reference itself cannot be judged and says how to fix it."""
    write, _ = files
    old = copy.deepcopy(steady)
    del old["workload"]["by_runtime"]
    base = tmp_path / "old-baseline.json"
    assert _gate(write(old), "--baseline", base, "--update-baseline").exit_code == 0
    res = _gate(write(steady), "--baseline", base)
    text = _flat(res.output)
    assert res.exit_code == 1 and "update the baseline" in text and "re-create the baseline" in text, res.output


def test_a_zero_workload_latency_is_unusable_input_not_a_regression(steady, files):
    """A damaged result whose workload timed 0 ms: one line, exit 2 (it divided by zero and read as a regression)."""
    write, base = files
    res = copy.deepcopy(steady)
    for entry in (res["workload"], *res["workload"]["by_runtime"].values()):
        entry["latency"]["batch_1"].update(p50_ms=0.0, p90_ms=0.0, round_p50_ms=[0.0, 0.0])
    out = _gate(write(res), "--baseline", base)
    assert out.exit_code == 2, out.output
    assert "not a timing" in out.output and "Traceback" not in out.output
