"""Explanation drift (edgeseg explain): the maps, the drift measures, the sanity checks, and the command on a real
bundle (ONNX Runtime and OpenVINO artifacts explained through their own runtimes)."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.explanation.maps import MapSettings, occlusion_map, perturbation_curves, rise_map
from edgeseg.explanation.metrics import Calibration, curve_auc, rank_correlation, top_iou
from edgeseg.explanation.sanity import check_methods

SETTINGS = MapSettings(occlusion_grid=4, rise_masks=256, rise_cells=4, curve_steps=4, batch=16)


def corner_model(batch: np.ndarray) -> np.ndarray:
    """Class 1's logit everywhere is 8 × the mean of the top-left 8×8 corner of channel 0: only that corner matters."""
    score = 8 * batch[:, 0, :8, :8].mean(axis=(1, 2))
    logits = np.zeros((len(batch), 2, *batch.shape[2:]), np.float32)
    logits[:, 1] = score[:, None, None]
    return logits


@pytest.fixture
def corner_case():
    x = np.ones((1, 16, 16), np.float32)
    regions = np.ones((1, 16, 16), bool)
    return x, regions


def test_occlusion_and_rise_find_the_pixels_the_model_uses(corner_case):
    x, regions = corner_case
    for saliency in (occlusion_map(corner_model, x, regions, SETTINGS), rise_map(corner_model, x, regions, SETTINGS)):
        assert saliency.shape == (1, 16, 16)
        corner, rest = saliency[0, :8, :8].mean(), saliency[0].copy()
        rest[:8, :8] = np.nan
        assert corner > np.nanmax(rest) or corner > 5 * abs(np.nanmean(rest))
    occluded = occlusion_map(corner_model, x, regions, SETTINGS)
    assert np.all(occluded[0, 8:, :] == 0) and np.all(occluded[0, :8, :8] > 0)


def test_rise_is_seeded_and_an_empty_region_gives_no_map(corner_case):
    x, regions = corner_case
    assert np.array_equal(rise_map(corner_model, x, regions, SETTINGS), rise_map(corner_model, x, regions, SETTINGS))
    other = rise_map(corner_model, x, regions, MapSettings(**{**SETTINGS.__dict__, "seed": 1}))
    assert rank_correlation(rise_map(corner_model, x, regions, SETTINGS), other) > 0.5  # stable across seeds
    empty = np.zeros_like(regions)
    assert not rise_map(corner_model, x, empty, SETTINGS).any()
    assert not occlusion_map(corner_model, x, empty, SETTINGS).any()


def test_deletion_of_the_salient_pixels_first_drops_the_score_fastest(corner_case):
    x, regions = corner_case
    good = occlusion_map(corner_model, x, regions, SETTINGS)
    curves_good = perturbation_curves(corner_model, x, regions, good, SETTINGS)
    curves_bad = perturbation_curves(corner_model, x, regions, -good, SETTINGS)
    assert curve_auc(curves_good["deletion"][0]) < curve_auc(curves_bad["deletion"][0])
    assert curve_auc(curves_good["insertion"][0]) > curve_auc(curves_bad["insertion"][0])


def test_drift_measures():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert rank_correlation(a, a) == pytest.approx(1.0) and top_iou(a, a) == 1.0
    assert rank_correlation(a, -a) == pytest.approx(-1.0) and top_iou(a, -a) == 0.0
    assert rank_correlation(a, np.zeros_like(a)) is None
    assert abs(rank_correlation(a, rng.random((32, 32)))) < 0.1
    assert curve_auc(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert curve_auc(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)


def test_calibration_of_a_perfectly_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(0)
    p1 = rng.random((64, 64))
    truth = (rng.random((64, 64)) < p1).astype(np.uint8)
    calibrated = Calibration(1)
    calibrated.add(np.stack([1 - p1, p1]), truth)
    overconfident = Calibration(1)
    sharp = (p1 > 0.5).astype(float) * 0.98 + 0.01
    overconfident.add(np.stack([1 - sharp, sharp]), truth)
    good, bad = calibrated.summary(["x"]), overconfident.summary(["x"])
    assert good["labels"]["x"]["ece"] < 0.03 < bad["labels"]["x"]["ece"]
    assert bad["entropy"] < good["entropy"]


def test_a_method_failing_a_sanity_check_is_withheld():
    rng = np.random.default_rng(0)
    trained = [{"good": rng.random((1, 16, 16)), "blind": np.ones((1, 16, 16)) * np.arange(16)}]
    again = [{"good": trained[0]["good"].copy(), "blind": trained[0]["blind"].copy()}]
    random = [{"good": rng.random((1, 16, 16)), "blind": trained[0]["blind"] * 2}]
    checks = check_methods(["good", "blind"], trained, again, random)
    assert checks["good"]["passed"] and not checks["blind"]["passed"]
    assert "random weights" in checks["blind"]["why"]
    noisy = check_methods(["good"], trained, random, random)
    assert not noisy["good"]["passed"] and "explained twice" in noisy["good"]["why"]


def test_explain_runs_every_artifact_in_its_own_runtime_and_writes_the_report(explained):
    out, result = explained
    assert result["schema"] == "edgeseg-explain" and result["reference"]["name"] == "torch-fp32"
    assert set(result["artifacts"]) == {"x86-onnxruntime-int8", "x86-avx512-openvino-int8", "x86-onnxruntime-fp32"}
    assert {"occlusion", "rise", "gradcam:bottleneck", "gradcam:last_decoder"} <= set(result["methods"])
    for check in result["sanity"].values():
        assert check["identical"]["rank_correlation"] in (None, pytest.approx(1.0))
    for name, entry in result["artifacts"].items():
        assert entry["forward_passes"] > 0 and entry["calibration"]["labels"]
        assert entry["methods"]["occlusion"]["organ"]["rank_correlation"]["mean"] is not None
    # the FP32 ONNX model is the PyTorch model in another runtime: its maps are the reference's
    fp32 = result["artifacts"]["x86-onnxruntime-fp32"]["methods"]["occlusion"]["organ"]
    assert fp32["rank_correlation"]["mean"] > 0.99 and fp32["top10_iou"]["mean"] > 0.95
    assert result["verdict"]
    # the hybrid's four attention gates, read from each artifact in its own runtime (extra outputs in memory)
    gates = result["attention_gates"]["gates"]
    assert len(gates) == 4 and not result["attention_gates"]["not_read"]
    assert all(set(entry["attention"]) == set(gates) for entry in result["artifacts"].values())
    same = result["artifacts"]["x86-onnxruntime-fp32"]["attention"]
    assert all(row["rank_correlation"]["mean"] > 0.999 for row in same.values())
    markdown = (out / "explain.md").read_text()
    assert "### Attention-gate coefficients" in markdown
    assert markdown.startswith("# edgeseg explain") and "## Verdict" in markdown
    assert (out / "calibration.png").is_file()
    assert any(out.glob("explain_x86-onnxruntime-int8*.png"))


def _plus_plus_reference(activation: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Grad-CAM++ of one layer as grad-cam's GradCAMPlusPlus computes it (numpy, before resizing): eq. 19 of
    Chattopadhay et al. with the exponential target's closed form."""
    g2, g3 = grad ** 2, grad ** 3
    sums = activation.sum(axis=(2, 3))[:, :, None, None]
    aij = np.where(grad != 0, g2 / (2 * g2 + sums * g3 + 1e-7), 0)
    weights = (np.maximum(grad, 0) * aij).sum(axis=(2, 3))[:, :, None, None]
    return np.maximum((weights * activation).sum(1), 0)[0]


def test_gradcam_plus_plus_shares_the_backward_pass_and_matches_grad_cams_formula():
    import torch

    from edgeseg.explanation.gradcam import _cam, gradcam_layers, gradcam_maps
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", 1, 3, base=4, depth=3).eval()
    x = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    regions = np.zeros((2, 32, 32), bool)
    regions[0, 8:20, 8:20] = True  # label 2 has no region: an all-zero map
    both = gradcam_maps(model, x, regions, ("gradcam", "gradcam++"))
    assert set(both) == {f"{v}:{layer}" for v in ("gradcam", "gradcam++") for layer in ("bottleneck", "last_decoder")}
    assert all(m.shape == (2, 32, 32) and (m >= 0).all() and not m[1].any() for m in both.values())
    assert all(both[f"gradcam++:{layer}"][0].any() for layer in ("bottleneck", "last_decoder"))
    plain = gradcam_maps(model, x, regions)
    assert set(plain) == {"gradcam:bottleneck", "gradcam:last_decoder"}
    assert all(np.array_equal(plain[m], both[m]) for m in plain)  # one more variant changes nothing of the other

    layer = gradcam_layers(model)["bottleneck"]
    captured = {}
    hook = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out))
    logits = model(torch.from_numpy(x[None]))
    hook.remove()
    grad, = torch.autograd.grad((logits[0, 1] * torch.from_numpy(regions[0])).sum(), [captured["a"]])
    activation = captured["a"].detach()
    expected = _plus_plus_reference(activation.double().numpy(), grad.double().numpy())
    ours = _cam(activation.double(), grad.double(), "gradcam++", tuple(activation.shape[2:]))
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9 * expected.max())


def test_explain_refuses_bad_input_in_one_line(bundle, phantom_demo, tmp_path, explained):
    runner = CliRunner()
    base = ["explain", str(bundle), "--data", str(phantom_demo), "--cases", "1"]
    for extra, message, code in ((["--labels", "spleen", "--out", str(tmp_path / "a")], "unknown label spleen", 64),
                                 (["--artifacts", "nope", "--out", str(tmp_path / "b")], "no artifact nope", 64),
                                 (["--out", str(explained[0])], "pass --force", 2)):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == code, result.output
        assert message in result.output and "Traceback" not in result.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "explain.md").write_text("my notes")
    result = runner.invoke(app, base + ["--out", str(foreign), "--force"])
    assert result.exit_code == 2 and "not written by edgeseg" in result.output
    assert (foreign / "explain.md").read_text() == "my notes"


def test_a_tampered_artifact_is_not_explained_and_exits_3(bundle, phantom_demo, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    with open(copy / "x86-onnxruntime-int8.onnx", "ab") as f:
        f.write(b"\0")
    result = CliRunner().invoke(app, [str(a) for a in ["explain", copy, "--data", phantom_demo, "--cases", 1,
                                                        "--rise-masks", 8, "--occlusion-grid", 2,
                                                        "--artifacts", "x86-onnxruntime-int8,x86-avx512-openvino-int8",
                                                        "--out", tmp_path / "ex"]])
    assert result.exit_code == 3, result.output
    written = json.loads((tmp_path / "ex" / "explain.json").read_text())
    assert "x86-onnxruntime-int8" in written["not_explained"] and "x86-avx512-openvino-int8" in written["artifacts"]


def test_a_volume_is_explained_where_the_reference_predicts_foreground(monkeypatch):
    """A volume gives many model inputs (slices, windows): those with predicted foreground, spread over it, are
    explained in order as CASE#INDEX; with none, the middle one."""
    from types import SimpleNamespace

    from edgeseg.benchmark import inputs as model_input
    from edgeseg.explanation.run import _samples

    foreground = [0, 5, 0, 40, 12, 0, 30, 35]  # the fullest of the runs [1, 3], [4, 6], [7]
    samples = [np.full((1, 8, 8), i, np.float32) for i in range(len(foreground))]
    monkeypatch.setattr(model_input, "model_inputs", lambda spec, image, spacing: samples)

    def runner(batch):  # class 1 on as many pixels as the sample's foreground count
        i = int(batch[0, 0, 0, 0])
        logits = np.zeros((1, 2, 8, 8), np.float32)
        logits[0, 1].flat[: foreground[i]] = 1
        return logits

    run = SimpleNamespace(spec=None, dataset=SimpleNamespace(root="."))
    case = SimpleNamespace(case_id="vol", image=None, geometry=SimpleNamespace(spacing=None))
    chosen = _samples(run, SimpleNamespace(run=runner), case, 3)
    assert [sid for sid, _ in chosen] == ["vol#3", "vol#6", "vol#7"]
    foreground[:] = [0] * len(foreground)
    assert [sid for sid, _ in _samples(run, SimpleNamespace(run=runner), case, 3)] == ["vol#4"]
