"""`edgeseg gate --max-explanation-drift`: explanation drift judged from explain results and bench --explain, alone
or beside the latency and Dice checks; bad limits and damaged or foreign explanations refused in one line."""
import copy
import json

import pytest
from gate_support import _flat, _gate

from edgeseg.errors import UsageError
from edgeseg.gating.explanation import explanation_checks, parse_explanation_limits

ORT_INT8 = "x86-onnxruntime-int8"


def _worst_rho(result: dict) -> float:
    method = result["headline_method"]
    return min(entry["methods"][method]["organ"]["rank_correlation"]["mean"] for entry in result["artifacts"].values())


def test_explanations_alone_are_gated_without_a_baseline(explained, tmp_path):
    out, result = explained
    path = out / "explain.json"
    drift = 1 - _worst_rho(result)
    passed = _gate(path, "--max-explanation-drift", f"{drift + 0.01:.4f}", "--junit", tmp_path / "j.xml")
    assert passed.exit_code == 0, passed.output
    assert "explanation organ" in _flat(passed.output) and "gate passed" in passed.output
    assert "explanation organ" in (tmp_path / "j.xml").read_text()
    failed = _gate(path, "--max-explanation-drift", f"{max(drift - 0.001, 0):.4f}")
    assert failed.exit_code == 1 and "FAIL" in failed.output and "gate failed" in failed.output
    per_label = _gate(path, "--max-explanation-drift", "iou:2,organ=0")  # the label's limit beats the default
    assert per_label.exit_code == 1, per_label.output
    assert "top-10 % IoU" in _flat(per_label.output)
    default = _gate(path)  # explanations given without a limit: ρ ≥ 0.9
    assert default.exit_code == (0 if drift <= 0.1 else 1), default.output


def test_explanations_beside_bench_results_and_the_baseline(explained, steady, gate_files):
    write, base = gate_files
    path = explained[0] / "explain.json"
    both = _gate(write(steady), path, "--baseline", base, "--max-explanation-drift", "2")
    assert both.exit_code == 0, both.output
    assert "latency p50" in both.output and "explanation organ" in _flat(both.output)
    broken = _gate(write(steady), path, "--baseline", base, "--max-explanation-drift", "0")
    assert broken.exit_code == 1 and "FAIL" in broken.output
    with_section = copy.deepcopy(steady)  # bench --explain puts the same result in the bench result
    with_section["explain"] = explained[1]
    assert _gate(write(with_section), "--baseline", base, "--max-explanation-drift", "0").exit_code == 1
    assert _gate(write(with_section), "--baseline", base, "--max-explanation-drift", "2").exit_code == 0


def test_foreign_damaged_and_missing_explanations_are_refused_in_one_line(explained, steady, gate_files, tmp_path):
    write, base = gate_files
    result = explained[1]
    foreign = copy.deepcopy(result)
    foreign["bundle_manifest_sha256"] = "0" * 64
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    damaged = {k: v for k, v in result.items() if k != "artifacts"}
    (tmp_path / "damaged.json").write_text(json.dumps(damaged))
    (tmp_path / "garbage.json").write_text("{not json")
    cases = [((write(steady), tmp_path / "foreign.json", "--baseline", base), "explains another bundle", 2),
             ((tmp_path / "damaged.json",), "damaged", 2),
             ((tmp_path / "garbage.json",), "not valid JSON", 2),
             ((write(steady), "--baseline", base, "--max-explanation-drift", "0.1"), "none of RESULTS has an explanation", 2),
             ((explained[0] / "explain.json", "--max-explanation-drift", "rho:x"), "measure must be rank or iou", 64),
             ((explained[0] / "explain.json", "--max-explanation-drift", "spleen=0.1"), "names ['spleen']", 64),
             ((explained[0] / "explain.json", "--update-baseline", "--baseline", tmp_path / "b.json"), "bench results only", 64)]
    for args, message, code in cases:
        res = _gate(*args)
        assert res.exit_code == code, (args, res.output)
        assert message in _flat(res.output) and "Traceback" not in res.output
    assert not (tmp_path / "b.json").exists()


def test_limits_and_checks_of_a_synthetic_result():
    assert parse_explanation_limits("0.1").measure == "rank_correlation"
    limits = parse_explanation_limits("iou:0.4,lung=0.3")
    assert (limits.measure, limits.limit("lung"), limits.limit("heart")) == ("top10_iou", 0.3, 0.4)
    table = parse_explanation_limits({"measure": "iou", "default": 0.5, "lung": 0.2})
    assert (table.limit("lung"), table.limit("x")) == (0.2, 0.5)

    def stats(mean):
        return {"mean": mean, "low": mean, "high": mean, "n": 4}

    row = {"rank_correlation": stats(0.95), "top10_iou": stats(0.6), "worst": [], "cases": 4}
    doc = {"labels": ["lung"], "headline_method": "rise", "not_explained": {"ov": "sha256 verification failed (x)",
                                                                           "trt": "tensorrt is not installed"},
           "artifacts": {"ort": {"methods": {"rise": {"lung": row}}}}}
    checks, notes = explanation_checks(doc, parse_explanation_limits("0.1"))
    assert [(c.artifact, c.passed) for c in checks] == [("ov", False), ("ort", True)]
    assert any("trt" in n for n in notes)
    assert not explanation_checks(doc, parse_explanation_limits("iou:0.3"))[0][1].passed
    blind, _ = explanation_checks({**doc, "headline_method": None}, parse_explanation_limits("0.1"))
    assert len(blind) == 1 and not blind[0].passed and "sanity" in blind[0].message


def test_gate_from_python_takes_explain_results(explained):
    import edgeseg

    out, result = explained
    drift = 1 - _worst_rho(result)
    assert edgeseg.gate(out / "explain.json", limits={"max_explanation_drift": drift + 0.01}).passed
    report = edgeseg.gate([result], limits={"max_explanation_drift": f"rank:{max(drift - 0.001, 0)}"})
    assert not report.passed and report.failed[0].check.startswith("explanation organ")
    with pytest.raises(UsageError, match="measure must be rank or iou"):
        edgeseg.gate([result], limits={"max_explanation_drift": "nope:1"})


def test_bench_explain_adds_the_explanation_section(bundle, phantom_demo, tmp_path):
    from typer.testing import CliRunner

    from edgeseg.benchmark.schema import read_result
    from edgeseg.cli import app

    out = tmp_path / "b.json"
    args = ["bench", bundle, "--data", phantom_demo, "--cases", 2, "--backends", "onnxruntime", "--no-latency",
            "--explain", "--explain-cases", 1, "--out", out]
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    result = read_result(out)  # still a valid bench result
    section = result["explain"]
    assert section["schema"] == "edgeseg-explain" and len(section["cases"]) == 1
    assert set(section["artifacts"]) == {ORT_INT8}  # the compressed artifact; FP32 ONNX made the reference's maps
    assert section["reference"]["forward_maps_by"] == "x86-onnxruntime-fp32"
    assert any(line.startswith("explanation (1 case)") for line in result["verdict"]["lines"])
    assert "## Explanation drift" in out.with_suffix(".md").read_text()


def test_a_result_missing_the_headline_map_of_an_artifact_fails_and_garbage_rows_are_refused(explained, tmp_path):
    result = copy.deepcopy(explained[1])
    method = result["headline_method"]
    result["artifacts"][ORT_INT8]["methods"].pop(method)  # an edited result must not pass by omission
    (tmp_path / "missing.json").write_text(json.dumps(result))
    res = _gate(tmp_path / "missing.json", "--max-explanation-drift", "2")
    assert res.exit_code == 1 and f"no {method} map" in _flat(res.output)
    broken = copy.deepcopy(explained[1])
    broken["artifacts"][ORT_INT8]["methods"][method]["organ"]["rank_correlation"]["mean"] = "0.99"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    res = _gate(tmp_path / "broken.json")
    assert res.exit_code == 2 and "damaged explain result" in _flat(res.output) and "Traceback" not in res.output


def test_attention_gates_are_gated_only_when_asked(explained, tmp_path):
    _, result = explained
    gates = result["attention_gates"]["gates"]
    worst = min(row["rank_correlation"]["mean"] for entry in result["artifacts"].values()
                for row in entry["attention"].values())
    path = tmp_path / "e.json"
    path.write_text(json.dumps(result))
    loose = _gate(path, "--max-explanation-drift", "2", "--json")
    assert loose.exit_code == 0 and "explanation gate" not in loose.output  # reported, not gated, by default
    passed = _gate(path, "--max-explanation-drift", f"2,attention={1 - worst + 0.001:.4f}", "--json")
    assert passed.exit_code == 0, passed.output
    checks = [c for c in json.loads(passed.stdout)["checks"] if c["check"].startswith("explanation gate")]
    assert len(checks) == len(gates) * len(result["artifacts"])
    failed = _gate(path, "--max-explanation-drift", f"2,attention={max(1 - worst - 0.001, 0):.4f}")
    assert failed.exit_code == 1 and "explanation gate" in _flat(failed.output)

    unread = copy.deepcopy(result)  # an artifact whose gates were not read cannot pass an attention limit
    unread["artifacts"][ORT_INT8]["attention"] = None
    unread["attention_gates"]["not_read"][ORT_INT8] = "its runtime cannot expose them"
    path.write_text(json.dumps(unread))
    res = _gate(path, "--max-explanation-drift", "2,attention=2")
    assert res.exit_code == 1 and "gates were not read" in _flat(res.output)

    damaged = copy.deepcopy(result)
    damaged["artifacts"][ORT_INT8]["attention"][gates[0]]["rank_correlation"]["mean"] = "high"
    path.write_text(json.dumps(damaged))
    res = _gate(path, "--max-explanation-drift", "2")
    assert res.exit_code == 2 and "attention gate" in res.output and "Traceback" not in res.output
