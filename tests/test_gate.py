"""`edgeseg gate` on results derived from a real phantom bench run (edited copies for each failure mode)."""
import copy
import json
from pathlib import Path

import pytest
from gate_support import INT8, _artifact, _flat, _gate, _scale, _slow_down, _workload_of

from edgeseg.benchmark.workload import WORKLOAD_NAME
from edgeseg.gating import device_class


def test_the_result_carries_the_workload_and_round_medians(gate_result):
    assert gate_result["workload"]["name"] == WORKLOAD_NAME and gate_result["workload"]["latency"]["batch_1"]["p50_ms"] > 0
    # timed on each runtime of the run: the torch reference, ONNX Runtime and OpenVINO artifacts
    by_runtime = gate_result["workload"]["by_runtime"]
    assert set(by_runtime) == {"torch", "onnxruntime", "openvino"}
    assert all(w["latency"]["batch_1"]["p50_ms"] > 0 for w in by_runtime.values())
    assert len(_artifact(gate_result, INT8)["latency"]["batch_1"]["round_p50_ms"]) == 2
    assert device_class(gate_result).startswith(f"cpu-{gate_result['device']['cpu']['arch']}-") and device_class(gate_result).endswith("-2t")


def test_unchanged_result_passes(steady, gate_files):
    write, base = gate_files
    res = _gate(write(steady), "--baseline", base)
    assert res.exit_code == 0, res.output
    assert "gate passed" in res.output and INT8 in res.output


def test_latency_regression_fails_naming_artifact_metric_and_limit(steady, gate_files):
    write, base = gate_files
    res = _gate(write(_slow_down(copy.deepcopy(steady), INT8, 1.5)), "--baseline", base, "--mode", "absolute")
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and INT8 in res.output and "latency p50" in res.output and "+10%" in res.output


def test_noise_band_edge(steady, tmp_path):
    """A slowdown inside the band measured from the rounds is not a regression; beyond it, it is. Six rounds at
    ±15 % of their median (MAD 0.15): σ = 1.4826 × 0.15 = 0.222 → band = 3 × 1.253 × 0.222 / √6 = 34.1 %, above
    the run-to-run floor of a one-run baseline (3 × 5 % × √2 = 21.2 %)."""
    (tmp_path / "steady.json").write_text(json.dumps(steady))
    base = tmp_path / "steady-baseline.json"
    assert _gate(tmp_path / "steady.json", "--baseline", base, "--update-baseline").exit_code == 0
    for factor, code in ((1.32, 0), (1.36, 1)):
        noisy = _slow_down(copy.deepcopy(steady), INT8, factor, spread=0.15)
        (tmp_path / "noisy.json").write_text(json.dumps(noisy))
        res = _gate(tmp_path / "noisy.json", "--baseline", base, "--mode", "absolute", "--max-latency-regression", "10%")
        assert res.exit_code == code, res.output
        assert "noise band 34.1% = max(rounds 34.1%, run-to-run 21.2%)" in _flat(res.output), res.output
    assert "FAIL" in res.output


def test_relative_mode_absorbs_a_slower_runner(steady, gate_files):
    write, base = gate_files
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


def test_dice_regression_and_per_label_limits(steady, gate_files):
    write, base = gate_files
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


def test_a_vanished_structure_fails_unless_allowed(steady, gate_files):
    write, base = gate_files
    vanished = copy.deepcopy(steady)
    case = vanished["data"]["cases"][0]
    _artifact(vanished, INT8)["accuracy"]["structure_changes"].append(
        {"case": case, "label": "lesion", "change": "vanished", "reference_voxels": 40, "artifact_voxels": 0})
    path = write(vanished)
    res = _gate(path, "--baseline", base)
    assert res.exit_code == 1 and f"{case}:lesion" in res.output
    assert _gate(path, "--baseline", base, "--allow-vanished", f"{case}:*").exit_code == 0


def test_missing_artifact_fails(steady, gate_files):
    write, base = gate_files
    fewer = copy.deepcopy(steady)
    fewer["artifacts"] = [a for a in fewer["artifacts"] if a["name"] != INT8]
    res = _gate(write(fewer), "--baseline", base)
    assert res.exit_code == 1 and "missing" in res.output


def test_schema_version_mismatch_is_unusable_input(steady, gate_files, tmp_path):
    write, base = gate_files
    newer = copy.deepcopy(steady)
    newer["schema_version"] = 2
    res = _gate(write(newer), "--baseline", base)
    assert res.exit_code == 2 and "schema_version 2" in res.output and "Traceback" not in res.output
    old_baseline = json.loads(base.read_text()) | {"schema_version": 99}
    other = tmp_path / "b99.json"
    other.write_text(json.dumps(old_baseline))
    assert _gate(write(steady), "--baseline", other).exit_code == 2
    assert _gate(write(steady), "--baseline", tmp_path / "none.json").exit_code == 2


def test_device_class_mismatch_is_refused_unless_told(steady, gate_files):
    write, base = gate_files
    other = copy.deepcopy(steady)
    other["device"]["cpu"]["isa"] = ["sse4_2"]  # a class no runner of these tests has (they have AVX2 at least)
    path = write(other)
    res = _gate(path, "--baseline", base)
    assert res.exit_code == 2 and "device class" in res.output
    assert _gate(path, "--baseline", base, "--allow-device-mismatch").exit_code == 0


def test_latency_against_another_device_class_is_shown_not_judged(steady, gate_files, tmp_path):
    """INT8 kernels differ between CPU generations even ÷ workload (ONNX Runtime INT8 +26 % on an AMX runner
    against a VNNI baseline, OpenVINO INT8 -17 %): with --allow-device-mismatch a slower artifact is shown as
    info with a note, never failed; Dice is still gated."""
    write, base = gate_files
    other = copy.deepcopy(steady)
    other["device"]["cpu"]["isa"] = ["sse4_2"]  # a class no runner of these tests has (they have AVX2 at least)
    res = _gate(write(_slow_down(copy.deepcopy(other), INT8, 2.0)), "--baseline", base, "--allow-device-mismatch",
                "--junit", tmp_path / "g.xml")
    text = _flat(res.output)
    assert res.exit_code == 0 and "info" in text and "latency not judged" in text and "not judged)" in text, res.output
    assert "gate: latency over its limit" not in text  # no confirmation run for a check that is not judged
    assert "<failure" not in (tmp_path / "g.xml").read_text()
    worse = copy.deepcopy(other)
    for stats in _artifact(worse, INT8)["accuracy"]["mean"].values():
        stats["dice"] -= 0.05
    assert _gate(write(worse), "--baseline", base, "--allow-device-mismatch").exit_code == 1


def test_other_cases_than_the_baseline_are_refused(steady, gate_files):
    write, base = gate_files
    other = copy.deepcopy(steady)
    other["data"]["fingerprint"] = "0" * 64
    res = _gate(write(other), "--baseline", base)
    assert res.exit_code == 2 and "other cases" in res.output


def test_repeated_runs_compare_medians(steady, gate_files):
    write, base = gate_files
    runs = [write(steady), write(_slow_down(copy.deepcopy(steady), INT8, 3.0)), write(steady)]
    assert _gate(*runs, "--baseline", base, "--mode", "absolute").exit_code == 0  # one outlier run of three


def test_junit_report_parses_with_failures_counted(steady, gate_files, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    write, base = gate_files
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


def test_limits_file_and_baseline_dir(steady, gate_files, tmp_path):
    write, _ = gate_files
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


def test_example_ci_workflow_runs_compress_bench_gate_and_uploads_junit():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs/ci/github-actions-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    commands = [s["run"].split()[:2] for s in steps if "run" in s]
    assert [c for c in commands if c[0] == "edgeseg"] == [["edgeseg", "compress"], ["edgeseg", "bench"], ["edgeseg", "gate"]]
    gate = next(s["run"] for s in steps if s.get("run", "").startswith("edgeseg gate"))
    assert "--junit build/gate.xml" in gate and "--baseline-dir" in gate
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and "build/gate.xml" in uploads[0]["with"]["path"] and uploads[0]["if"] == "always()"


def test_each_artifact_is_divided_by_the_workload_of_its_own_runtime(steady, gate_files):
    """A busy machine slows OpenVINO far more than ONNX Runtime: OpenVINO artifacts are judged against the
    OpenVINO workload of the same run, so that passes, while the same slowdown with an unchanged OpenVINO
    workload is a regression."""
    write, base = gate_files
    ov = next(a["name"] for a in steady["artifacts"] if a["runtime"] == "openvino" and a["latency"])
    contended = _slow_down(copy.deepcopy(steady), ov, 1.5)
    _scale(_workload_of(contended, "openvino"), 1.5)
    assert _gate(write(contended), "--baseline", base).exit_code == 0
    res = _gate(write(_slow_down(copy.deepcopy(steady), ov, 1.5)), "--baseline", base)
    assert res.exit_code == 1 and ov in res.output


def test_every_run_needs_the_slowdown_to_reproduce(steady, gate_files):
    write, base = gate_files
    slow, steady_again = write(_slow_down(copy.deepcopy(steady), INT8, 1.5)), write(steady)
    res = _gate(slow, steady_again, "--baseline", base, "--every-run")
    assert res.exit_code == 0 and "+50.0%, +0.0%" in _flat(res.output)  # each run's change, judged pooled
    res = _gate(slow, write(_slow_down(copy.deepcopy(steady), INT8, 1.4)), "--baseline", base, "--every-run")
    assert res.exit_code == 1 and "confirmed: every run slower than +5%" in _flat(res.output), res.output
    assert _gate(slow, slow, "--baseline", base).exit_code == 1


def test_a_confirming_run_needs_half_the_limit_not_all_of_it(steady, gate_files):
    """Under load ÷ workload reads a real slowdown low: a second run at +8 % (over half the 10 % limit) confirms a
    first at +40 %; a run at +4 % does not, whatever the others and the pooled median say."""
    write, base = gate_files
    first = write(_slow_down(copy.deepcopy(steady), INT8, 1.4))
    res = _gate(first, write(_slow_down(copy.deepcopy(steady), INT8, 1.08)), "--baseline", base, "--every-run")
    assert res.exit_code == 1 and "+40.0%, +8.0%" in _flat(res.output), res.output
    res = _gate(first, first, write(_slow_down(copy.deepcopy(steady), INT8, 1.04)), "--baseline", base, "--every-run")
    assert res.exit_code == 0 and "not confirmed: run 3 of 3 not slower than +5%" in _flat(res.output), res.output


def test_a_baseline_divided_by_another_runtime_s_workload_is_not_compared_silently(steady, gate_files, tmp_path):
    """A baseline written before per-runtime workloads divided everything by ONNX Runtime's: OpenVINO artifacts
    fall back to ÷ FP32 reference, the reference itself cannot be judged and says how to fix it."""
    write, _ = gate_files
    old = copy.deepcopy(steady)
    del old["workload"]["by_runtime"]
    base = tmp_path / "old-baseline.json"
    assert _gate(write(old), "--baseline", base, "--update-baseline").exit_code == 0
    res = _gate(write(steady), "--baseline", base)
    text = _flat(res.output)
    assert res.exit_code == 1 and "update the baseline" in text and "re-create the baseline" in text, res.output


def test_a_zero_workload_latency_is_unusable_input_not_a_regression(steady, gate_files):
    """A damaged result whose workload timed 0 ms: one line, exit 2 (it divided by zero and read as a regression)."""
    write, base = gate_files
    res = copy.deepcopy(steady)
    for entry in (res["workload"], *res["workload"]["by_runtime"].values()):
        entry["latency"]["batch_1"].update(p50_ms=0.0, p90_ms=0.0, round_p50_ms=[0.0, 0.0])
    out = _gate(write(res), "--baseline", base)
    assert out.exit_code == 2, out.output
    assert "not a timing" in out.output and "Traceback" not in out.output


# --- issue H: rounds, the noise floor, the built-in confirmation run, baselines not silently replaced ---


def test_int8_is_also_divided_by_the_fp32_artifact_of_its_runtime(steady, gate_files):
    """On a busy core the fixed workload slowed more than the models (÷ workload read an inserted +25 % as +5 %):
    an INT8 artifact is also divided by the FP32 artifact of its runtime, timed in the same rounds, and either
    denominator can fail it. A model that grew slows that FP32 artifact too: ÷ workload still catches it."""
    write, base = gate_files
    fp32 = next(a["name"] for a in steady["artifacts"] if a["runtime"] == "onnxruntime" and a["precision"] == "fp32")
    busy = _slow_down(copy.deepcopy(steady), INT8, 1.25)
    _scale(_workload_of(busy, "onnxruntime"), 1.15)
    _scale(busy["workload"]["latency"]["batch_1"], 1.15)
    res = _gate(write(busy), "--baseline", base)
    assert res.exit_code == 1 and "÷ FP32 on its runtime" in _flat(res.output), res.output
    assert _gate(write(busy), "--baseline", base, "--mode", "workload").exit_code == 0  # the workload alone misses it
    grown = _slow_down(_slow_down(copy.deepcopy(steady), INT8, 1.3), fp32, 1.3)
    res = _gate(write(grown), "--baseline", base)
    assert res.exit_code == 1 and "÷ workload" in _flat(res.output), res.output
