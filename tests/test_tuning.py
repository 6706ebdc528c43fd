"""Per-node INT8 sensitivity (issue D) with real ONNX Runtime quantization on a deliberately fragile model."""
import json

import pytest
import torch
from typer.testing import CliRunner

from edgeseg.checkpoint import load_checkpoint, read_spec, save_checkpoint
from edgeseg.cli import app
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.demo import default_checkpoint
from edgeseg.errors import EdgesegError
from edgeseg.tuning.scorer import tuning_cases
from edgeseg.tuning.sensitivity import SensitivityConfig, measure_sensitivity

FRAGILE = "encoders.0.stages.1.1.block"


@pytest.fixture(scope="module")
def fragile_checkpoint(tmp_path_factory):
    """The phantom model with one activation given a huge outlier range that the FP32 output ignores:
    channel 0 after the first conv+BN+ReLU of the second encoder stage reads ~20000, and the next conv
    gives that channel zero weight. Per-tensor INT8 of that activation wipes out the other channels."""
    model, spec = load_checkpoint(default_checkpoint())
    block = model.encoders[0].stages[1][1].block
    with torch.no_grad():
        block[1].bias[0] += 20000.0
        block[3].weight[:, 0] = 0.0
    path = tmp_path_factory.mktemp("fragile") / "fragile.ckpt"
    save_checkpoint(path, model, spec)
    return path


@pytest.fixture(scope="module")
def sensitivity(fragile_checkpoint, phantom_demo):
    return measure_sensitivity(SensitivityConfig(checkpoint=fragile_checkpoint, calib=phantom_demo, data=phantom_demo,
                                                 cases=6, calib_size=8, threads=2))


def test_the_fragile_layer_ranks_first(sensitivity):
    assert sensitivity["all_int8"]["delta"]["lesion"] < -0.2  # all INT8 breaks the lesion
    top, rest = sensitivity["nodes"][:2], sensitivity["nodes"][2:]
    # the two convs around the outlier tensor: its producer (conv+BN at block.0/1) and its consumer (block.3/4)
    assert {n["module"] for n in top} == {f"{FRAGILE}.1", f"{FRAGILE}.4"}
    assert all(n["dice_cost"]["lesion"] > 0.2 for n in top)
    assert all(n["worst_label_cost"] < 0.02 for n in rest)


def test_result_records_cases_and_is_json(sensitivity, phantom_demo):
    json.dumps(sensitivity, allow_nan=False)
    tune, calib = sensitivity["tuning"]["cases"], sensitivity["calibration"]["cases"]
    assert len(tune) == 6 and not set(tune) & set(calib)
    assert not set(tune) & set(read_spec(default_checkpoint()).data["val_cases"])
    assert sensitivity["mode"] == "quantize-one" and sensitivity["nodes"][0]["op_type"] in ("Conv", "MatMul", "Gemm")


def test_tuning_on_the_reported_validation_cases_is_refused(phantom_demo):
    spec = read_spec(default_checkpoint())
    dataset = NnUNetDataset(phantom_demo)
    with pytest.raises(EdgesegError, match="validation cases"):
        tuning_cases(spec, dataset, [], split="val")
    train = tuning_cases(spec, dataset, spec.data["train_cases"][:5], split="train", n=100)
    assert not set(train) & set(spec.data["train_cases"][:5]) and not set(train) & set(spec.data["val_cases"])


def test_cli_writes_json_and_chart(fragile_checkpoint, phantom_demo, tmp_path):
    out = tmp_path / "s.json"
    args = ["sensitivity", fragile_checkpoint, "--calib", phantom_demo, "--data", phantom_demo, "--cases", 3,
            "--calib-size", 4, "--mode", "float-one", "--threads", 2, "--out", out]
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["mode"] == "float-one"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(app, [str(a) for a in args[:-2] + ["--mode", "nope", "--out", tmp_path / "x.json"]])
    assert res.exit_code == 64 and "--mode" in res.output


def _compress(*args):
    return CliRunner().invoke(app, ["compress", *[str(a) for a in args]])


def test_compress_max_dice_drop_returns_the_fragile_layer_to_float(fragile_checkpoint, phantom_demo, tmp_path):
    from edgeseg.bundle import load_bundle

    out = tmp_path / "b"
    res = _compress(fragile_checkpoint, "--int8", "--calib", phantom_demo, "--calib-size", 8, "--eval-cases", 6,
                    "--targets", "onnx,openvino", "--max-dice-drop", 0.5, "--tune-cases", 6, "--latency-repeats", 2,
                    "--threads", 2, "--out", out)
    assert res.exit_code == 0, res.output
    manifest = load_bundle(out)  # the precision map round-trips through the verified manifest
    report = manifest["accuracy_aware"]
    assert report["limits"]["max_dice_drop_points"] == 0.5 and len(report["tuning"]["cases"]) == 6
    assert report["sensitivity"]["ranking"][0]["module"].startswith(FRAGILE)
    artifacts = {a["name"]: a for a in manifest["artifacts"]}
    for name, result in report["targets"].items():
        assert result["met"] and result["history"][0]["problems"]  # all INT8 broke the limit, the search fixed it
        own = result if result["method"] == "edgeseg-float-plan" else result["alternatives"]["edgeseg-float-plan"]
        consumer = [n for n in own["added"] if n["module"] == f"{FRAGILE}.4"]
        assert consumer and len(own["added"]) <= 2 and "latency_cost_ms" in consumer[0]
        assert (consumer[0]["name"] in artifacts[name]["float_nodes"] or name.endswith("openvino-int8")
                or result["method"] != "edgeseg-float-plan")
        assert all(d > -0.5 for d in result["score"]["delta_points"].values())
        assert result["latency"]["all_int8_p50_ms"] > 0 and result["latency"]["speed_retained"] > 0
        # held-back validation cases (not tuned on) agree too
        assert artifacts[name]["accuracy"]["drift_vs_fp32"]["lesion"] > -0.02
    assert not set(report["tuning"]["cases"]) & set(manifest["evaluation"]["cases"])
    assert not set(report["tuning"]["cases"]) & set(manifest["calibration"]["cases"])
    # OpenVINO also ran NNCF's accuracy control with the same limits; both candidates are recorded
    ov = report["targets"]["x86-avx512-openvino-int8"]
    assert "nncf-accuracy-control" in ov["alternatives"]
    assert ("edgeseg-float-plan" in ov["alternatives"]) == (ov["method"] == "nncf-accuracy-control")
    assert ("accuracy_control" in artifacts["x86-avx512-openvino-int8"]["details"]["quantizer"]) == (
        ov["method"] == "nncf-accuracy-control")


def test_budget_exhaustion_keeps_the_best_and_exits_non_zero(fragile_checkpoint, phantom_demo, tmp_path):
    from edgeseg.bundle import load_bundle

    args = [fragile_checkpoint, "--int8", "--calib", phantom_demo, "--calib-size", 8, "--eval-cases", 2,
            "--targets", "onnx", "--max-dice-drop", 0.5, "--tune-cases", 4, "--budget-minutes", 0,
            "--latency-repeats", 2]
    res = _compress(*args, "--out", tmp_path / "b")
    assert res.exit_code == 4 and "could not be met" in res.output
    report = load_bundle(tmp_path / "b")["accuracy_aware"]
    result = report["targets"]["x86-onnxruntime-int8"]
    assert not result["met"] and result["problems"] and len(result["history"]) == 1
    assert report["sensitivity"] is None  # no budget left to rank the nodes: none was spent on it
    assert _compress(*args, "--allow-miss", "--out", tmp_path / "c").exit_code == 0


def test_dice_limits_parse_and_check():
    from edgeseg.tuning.search import DiceLimits

    limits = DiceLimits.parse(0.5, "lesion=1.0")
    score = {"delta": {"organ": -0.006, "lesion": -0.009}, "vanished": []}
    assert limits.check(score, ["background", "organ", "lesion"]) == ["organ -0.60 pts (limit -0.5)"]
    assert limits.excess(score) == pytest.approx(0.1)
    assert limits.check({**score, "delta": {"organ": 0.0, "lesion": 0.0}, "vanished": [("c1", "lesion")]},
                        ["background", "organ", "lesion"])[0].startswith("1 structure(s) vanished")
    assert limits.slack(score) == pytest.approx(-0.1)  # organ is 0.1 over its 0.5 limit; lesion has 0.1 left
    assert limits.slack({**score, "delta": {"organ": 0.0, "lesion": -0.002}}) == pytest.approx(0.5)
    with pytest.raises(EdgesegError, match="LABEL=POINTS"):
        DiceLimits.parse(0.5, "lesion")
    with pytest.raises(EdgesegError, match="labels"):
        DiceLimits.parse(0.5, "nodule=1").check(score, ["background", "organ", "lesion"])


def test_tuning_cases_overlapping_the_evaluated_cases_are_refused(phantom_demo):
    from edgeseg.calibration import build_calibration_set
    from edgeseg.tuning.accuracy_aware import AccuracyAwareSettings, _tuning_scorer
    from edgeseg.tuning.search import DiceLimits

    model, spec = load_checkpoint(default_checkpoint())
    dataset = NnUNetDataset(phantom_demo)
    calib = build_calibration_set(phantom_demo, spec.preprocessing, 2, 4, case_ids=spec.data["train_cases"][:10])
    settings = AccuracyAwareSettings(DiceLimits(0.5), tune_cases=4)
    with pytest.raises(EdgesegError, match="overlap the"):
        _tuning_scorer(settings, model, spec, calib, phantom_demo, dataset, spec.data["train_cases"], 0)


def test_nncf_alternative_replaces_the_float_plan_only_when_better():
    from edgeseg.tuning.accuracy_aware import _prefer_alternative, _swap_in

    def result(mine_met, mine_ms, theirs_met, theirs_ms):
        return {"met": mine_met, "slack_points": 0.1 if mine_met else -0.2, "score": {"delta_points": {"a": -0.1}},
                "problems": [] if mine_met else ["a over"], "added": [{"name": "conv1"}],
                "latency": {"all_int8_p50_ms": 10.0, "p50_ms": mine_ms, "speed_retained": 10.0 / mine_ms},
                "alternatives": {"nncf-accuracy-control": {
                    "met": theirs_met, "slack_points": 0.05 if theirs_met else -0.1, "score": {"delta_points": {}},
                    "problems": [], "fake_quantize_ops": 40, "seconds": 3.0, "p50_ms": theirs_ms}}}

    assert not _prefer_alternative(result(True, 11.0, True, 10.8))   # within the 5 % timing noise: keep ours
    assert _prefer_alternative(result(True, 12.0, True, 10.5))
    assert _prefer_alternative(result(False, 10.0, True, 14.0))      # meeting the limits beats speed
    assert not _prefer_alternative(result(True, 14.0, False, 10.0))
    assert _prefer_alternative(result(False, 10.0, False, 10.0))     # neither: the one closer to the limits
    swapped = result(True, 12.0, True, 10.5)
    _swap_in(swapped, "nncf-accuracy-control")
    assert swapped["method"] == "nncf-accuracy-control" and swapped["added"] == []
    assert swapped["alternatives"]["edgeseg-float-plan"]["added"] == [{"name": "conv1"}]
    assert swapped["latency"]["p50_ms"] == 10.5 and swapped["latency"]["speed_retained"] == pytest.approx(10 / 10.5, abs=1e-3)


def test_give_back_keeps_only_the_nodes_the_limits_need():
    from edgeseg.tuning.search import DiceLimits, _give_back

    added = [{"name": f"n{i}"} for i in range(16)]  # ranking order; only n3 and n11 are needed
    trials = []

    def run(plan, what):
        trials.append(what)
        names = {n["name"] for n in plan}
        return {"delta": {"lesion": 0.0 if {"n3", "n11"} <= names else -0.05}, "vanished": []}

    kept, score = _give_back(added, None, run, lambda nodes: nodes, DiceLimits(0.5), ["background", "lesion"],
                             lambda: True)
    assert [n["name"] for n in kept] == ["n3", "n11"] and score["delta"]["lesion"] == 0.0
    assert len(trials) < 16  # fewer than one trial per node
    assert _give_back(added[:1], "s", run, lambda nodes: nodes, DiceLimits(0.5), ["background", "lesion"],
                      lambda: True) == (added[:1], "s") and len(trials) < 17
