"""`edgeseg gate` and `edgeseg bench` on hostile and damaged input: missing evidence never passes, a damaged baseline
or result is one line of unusable input (exit 2), a limit or count that means nothing is a usage error (exit 64)."""
import copy
import json
import time

import pytest
from gate_support import _flat, _gate, _scale
from test_bench_report import result  # noqa: F401 — result: a hand-made, schema-valid bench result
from typer.testing import CliRunner

import edgeseg
from edgeseg.benchmark.harness import BenchConfig
from edgeseg.benchmark.schema import MAX_DOCUMENT_BYTES, MAX_ITEMS
from edgeseg.cli import app
from edgeseg.errors import InputError, UsageError
from edgeseg.gating import make_baseline

INT8 = "x86-avx512-openvino-int8"


@pytest.fixture
def timed(result):  # noqa: F811
    """The hand-made result with six equal rounds per timing (what the gate needs to judge latency), no structure
    vanished: it passes against its own baseline."""
    out = copy.deepcopy(result)
    for artifact in out["artifacts"]:
        if artifact["latency"]:
            _scale(artifact["latency"]["batch_1"], 1.0)
        if artifact["accuracy"]:
            artifact["accuracy"]["structure_changes"] = []
    return out


@pytest.fixture
def files(timed, tmp_path):
    """``write(name, document or text) → path`` and the path of the baseline made from ``timed``."""
    def write(name, doc):
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
        return path

    return write, write("baseline.json", make_baseline([timed], ["r.json"]))


def _refused(res, code: int, *texts: str) -> str:
    """The CLI stopped with ``code`` on a line naming ``texts``, not on an exception."""
    text = _flat(res.output)
    assert res.exit_code == code, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output, res.output
    assert all(t in text for t in texts), res.output
    return text


def test_the_hand_made_result_passes_against_its_own_baseline(timed, files):
    write, base = files
    res = _gate(write("r.json", timed), "--baseline", base)
    assert res.exit_code == 0 and "gate passed" in res.output, res.output


def test_results_without_any_accuracy_fail_every_dice_check_of_the_baseline(timed, files):
    """M4 (a): ``accuracy: null`` everywhere passed with latency alone and claimed no structure vanished."""
    write, base = files
    for artifact in timed["artifacts"]:
        artifact["accuracy"] = None
    text = _refused(_gate(write("r.json", timed), "--baseline", base), 1, "dice lesion", "no accuracy at all")
    assert "no structure vanished" not in text and "in the baseline, not in the results" in text


def test_a_label_missing_from_the_results_fails_its_check(timed, files):
    """M4 (b): a label the baseline has, dropped from the results, was skipped and the gate passed."""
    write, base = files
    for artifact in timed["artifacts"]:
        if artifact["accuracy"]:
            for key in ("mean", "agreement", "drift", "worst_case"):
                artifact["accuracy"][key].pop("lesion")
    text = _refused(_gate(write("r.json", timed), "--baseline", base), 1, "FAIL")
    assert "dice lesion" in text and "no dice of it" in text and "dice organ" in text


def test_a_baseline_with_nothing_to_compare_does_not_pass(timed, files):
    """M4 (c): ``"artifacts": {}`` passed as "0 checks"; so would a baseline whose artifacts measured nothing."""
    write, base = files
    results = write("r.json", timed)
    empty = json.loads(base.read_text()) | {"artifacts": {}}
    _refused(_gate(results, "--baseline", write("b0.json", empty)), 2, "nothing to gate")
    refused_only = json.loads(base.read_text())
    refused_only["artifacts"] = {k: v for k, v in refused_only["artifacts"].items() if v["status"] == "refused"}
    assert refused_only["artifacts"]
    _refused(_gate(results, "--baseline", write("b1.json", refused_only)), 2, "nothing to gate")


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("text", [DEEP, '{"schema": "edgeseg-bench", "schema_version": ' + "9" * 5000 + "}",
                                  '{"schema": "edgeseg-bench", "x": ' + "[" * 900 + "]" * 900 + "}"],
                         ids=["nested-100000", "int-5000-digits", "nested-900"])
def test_hostile_json_as_results_or_baseline_is_one_line(timed, files, text):
    write, base = files
    hostile = write("hostile.json", text)
    _refused(_gate(hostile, "--baseline", base), 2, "hostile.json")
    baseline_text = text.replace("edgeseg-bench", "edgeseg-gate-baseline")
    _refused(_gate(write("r.json", timed), "--baseline", write("b.json", baseline_text)), 2, "b.json")


def _set_everywhere(baseline: dict, key: str, value) -> dict:
    for artifact in baseline["artifacts"].values():
        for modes in artifact["latency"].values():
            for entry in modes.values():
                entry[key] = value
    return baseline


DAMAGE = {
    "artifacts-list": lambda b: b | {"artifacts": [1]},
    "run_sigma-nan": lambda b: b | {"run_sigma": float("nan")},
    "run_sigma-negative": lambda b: b | {"run_sigma": -1},
    "run_sigma-string": lambda b: b | {"run_sigma": "x"},
    "runs-0": lambda b: b | {"runs": 0},
    "dice-strings": lambda b: {**b, "artifacts": {k: v | {"dice": {lab: "0.9" for lab in v["dice"] or {"organ": 0}}}
                                                 for k, v in b["artifacts"].items()}},
    "dice-nan": lambda b: {**b, "artifacts": {k: v | {"dice": {"organ": float("nan")}}
                                              for k, v in b["artifacts"].items()}},
    "latency-zero": lambda b: _set_everywhere(b, "value", 0.0),
    "sigma-nan": lambda b: _set_everywhere(b, "sigma", float("nan")),
    "rounds-missing": lambda b: _set_everywhere(b, "rounds", None),
    "data-fingerprint": lambda b: b | {"data": {**b["data"], "fingerprint": 7}},
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_baseline_is_unusable_input(timed, files, damage):
    write, base = files
    damaged = write("damaged.json", json.dumps(damage(json.loads(base.read_text()))))
    _refused(_gate(write("r.json", timed), "--baseline", damaged), 2, "damaged.json: damaged baseline")


def test_the_python_api_checks_a_baseline_dict_and_the_limits(timed, files):
    _, base = files
    baseline = json.loads(base.read_text())
    assert edgeseg.gate(timed, baseline=baseline).passed
    with pytest.raises(InputError, match="artifacts: expected an object"):
        edgeseg.gate(timed, baseline=baseline | {"artifacts": [1]})
    with pytest.raises(InputError, match="baseline .*not a valid edgeseg-bench result"):
        edgeseg.gate(timed, baseline={})
    for limits in ({"max_dice_drop": float("nan")}, {"max_latency_regression": "inf"}, {"max_dice_drop": "lesion=-1"},
                   {"max_dice_drop": "x"}, {"per_label": {"lesion": float("nan")}}):
        with pytest.raises(UsageError):
            edgeseg.gate(timed, baseline=baseline, limits=limits)


@pytest.mark.parametrize("option", [["--max-dice-drop", "nan"], ["--max-latency-regression", "nan"],
                                    ["--max-latency-regression", "inf"], ["--max-latency-regression", "-5%"],
                                    ["--max-dice-drop", "0.5,lesion=nan"], ["--max-dice-drop", "-1"]])
def test_gate_limits_that_mean_nothing_are_usage_errors(timed, files, option):
    write, base = files
    _refused(_gate(write("r.json", timed), "--baseline", base, *option), 64, option[0], "finite number ≥ 0")


def test_a_limits_file_with_nan_is_a_usage_error(timed, files, tmp_path):
    write, base = files
    (tmp_path / "gate.toml").write_text("max_dice_drop = nan\n")
    _refused(_gate(write("r.json", timed), "--baseline", base, "--limits", tmp_path / "gate.toml"), 64, "finite")


def test_oversized_results_are_refused_before_they_are_read(timed, files, tmp_path):
    """A 500 MB result hung the gate: the file size is bounded, and so is every list in a smaller one."""
    write, base = files
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: the size is what is checked, nothing is read
    _refused(_gate(big, "--baseline", base), 2, "big.json", "MB, larger than any result")
    _refused(_gate(write("r.json", timed), "--baseline", big), 2, "larger than any baseline")
    long = copy.deepcopy(timed)
    long["artifacts"][1]["latency"]["batch_1"]["round_p50_ms"] = [1.0] * (MAX_ITEMS + 1)
    start = time.perf_counter()
    _refused(_gate(write("long.json", long), "--baseline", base), 2, "round_p50_ms", "larger or deeper than any")
    assert time.perf_counter() - start < 10


BENCH_OPTIONS = [["--rounds", "0"], ["--repeats", "-1", "--rounds", "-2"], ["--cases", "-3"], ["--batch-size", "-1"],
                 ["--warmup", "-1"], ["--threads", "-1"], ["--threads", "0"], ["--e2e-cases", "-1"],
                 ["--max-dice-drop", "nan"], ["--max-dice-drop", "-1"], ["--per-label", "lesion=nan"]]


@pytest.mark.parametrize("option", BENCH_OPTIONS, ids=[" ".join(o) for o in BENCH_OPTIONS])
def test_bench_counts_and_limits_that_mean_nothing_are_usage_errors(tmp_path, option):
    """Refused before the bundle is read (here there is none): `--rounds 0` divided by zero, `--cases -3` used 17 of
    20 cases, `--max-dice-drop nan` printed "≤ nan pts"."""
    res = CliRunner().invoke(app, ["bench", str(tmp_path / "none"), "--data", str(tmp_path), *option,
                                   "--out", str(tmp_path / "b.json")])
    assert res.exit_code == 64 and "Traceback" not in res.output, res.output
    assert option[0] in res.output or option[-1].split("=")[0] in res.output, res.output
    assert not (tmp_path / "b.json").exists()


def test_batch_size_0_still_means_batch_1_only(tmp_path):
    res = CliRunner().invoke(app, ["bench", str(tmp_path / "none"), "--data", str(tmp_path), "--batch-size", "0"])
    assert res.exit_code == 2 and "not an edgeseg bundle" in res.output, res.output


@pytest.mark.parametrize("field", [{"rounds": 0}, {"repeats": -1}, {"max_cases": -3}, {"batch_size": -1},
                                   {"warmup": -1}, {"threads": 0}, {"rounds": "6"}, {"rounds": True},
                                   {"limits": {"max_dice_drop_points": float("nan")}},
                                   {"limits": {"max_dice_drop_points": 0.5, "per_label_points": {"lesion": -1.0}}}],
                         ids=str)
def test_the_python_api_refuses_the_same_bench_settings(tmp_path, field):
    with pytest.raises(UsageError):
        BenchConfig(bundle=tmp_path, data=tmp_path, **field)
    if "limits" not in field:  # edgeseg.bench takes them as max_dice_drop=
        with pytest.raises(UsageError):
            edgeseg.bench(tmp_path / "none", tmp_path, **field)


def test_the_python_api_refuses_negative_explain_cases_and_nan_dice_limits(tmp_path):
    with pytest.raises(UsageError, match="explain_cases"):
        edgeseg.bench(tmp_path / "none", tmp_path, explain_cases=-1)
    for limit in (float("nan"), "lesion=nan"):
        with pytest.raises(UsageError, match="finite"):
            edgeseg.bench(tmp_path / "none", tmp_path, max_dice_drop=limit)
