"""`edgeseg compress` end to end on the bundled phantom checkpoint with real ONNX Runtime, OpenVINO and NNCF."""
import json
import shutil

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edgeseg.bundle import load_bundle, read_manifest, verify_bundle
from edgeseg.calibration import build_calibration_set, save_calibration
from edgeseg.checkpoint import read_spec
from edgeseg.cli import app
from edgeseg.compression.pipeline import CompressConfig, compress
from edgeseg.compression.stages import prune_alignment
from edgeseg.demo import default_checkpoint
from edgeseg.errors import EdgesegError

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_bundle_manifest_records_everything(bundle):
    manifest = load_bundle(bundle)
    assert manifest["schema"] == "edgeseg-bundle" and manifest["schema_version"] == 2
    names = [a["name"] for a in manifest["artifacts"]]
    assert names == ["torch-fp32", "x86-onnxruntime-fp32", "x86-onnxruntime-int8", "x86-avx512-openvino-int8",
                     "rtx-tensorrt-int8"]
    for artifact in manifest["artifacts"]:
        assert set(artifact["hashes"]) == set(artifact["files"])
        assert all(len(h["sha256"]) == 64 for h in artifact["hashes"].values())
    assert manifest["source_checkpoint"]["sha256"]
    assert manifest["labels"] == ["background", "organ", "lesion"]
    assert manifest["preprocessing"]["size"] == [128, 128]
    calib, evaluation = manifest["calibration"], manifest["evaluation"]
    assert calib["size"] == 16 and calib["strategy"] == "stratified"
    assert set(calib["cases"]).isdisjoint(evaluation["cases"]) and len(evaluation["cases"]) == 8
    assert set(calib["cases"]) <= set(read_spec(default_checkpoint()).data["train_cases"])
    kinds = {n["reason"] for n in manifest["float_nodes"]}
    assert {"preset @layernorm", "preset @softmax", "preset @gelu", "preset @logits"} <= kinds
    assert manifest["tool_versions"]["onnxruntime"] and manifest["tool_versions"]["openvino"]
    assert manifest["device"]["cpu"]["model"] and manifest["device"]["threads"] is None
    accuracy = manifest["artifacts"][2]["accuracy"]
    assert accuracy["drift_ci95"]["organ"]["low"] <= accuracy["drift_vs_fp32"]["organ"] <= accuracy["drift_ci95"]["organ"]["high"]
    assert isinstance(accuracy["structure_changes"], list)


def test_int8_artifacts_agree_with_fp32(bundle):
    manifest = read_manifest(bundle)
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    fp32 = by_name["x86-onnxruntime-fp32"]
    assert fp32["parity_vs_torch"]["max_abs_diff"] < 1e-3 and fp32["parity_vs_torch"]["mask_agreement"] > 0.999
    for name in ("x86-onnxruntime-int8", "x86-avx512-openvino-int8", "rtx-tensorrt-int8"):
        acc = by_name[name]["accuracy"]
        assert acc["agreement_vs_fp32"]["organ"] > 0.97, (name, acc)
        assert abs(acc["drift_vs_fp32"]["organ"]) < 0.02, (name, acc)
        assert by_name[name]["size_bytes"] < 0.6 * fp32["size_bytes"]  # INT8 weights
    assert "u8" in by_name["x86-avx512-openvino-int8"]["executed_precision"] or \
        "i8" in by_name["x86-avx512-openvino-int8"]["executed_precision"]
    assert by_name["x86-onnxruntime-int8"]["latency"]["p50_ms"] > 0
    assert by_name["x86-onnxruntime-int8"]["latency"]["peak_rss_mb"] > 10  # the worker process, runtime loaded
    assert by_name["x86-avx512-openvino-int8"]["latency"]["load_seconds"] > 0  # cold start: load + first run
    assert "QDQ ONNX on ONNX Runtime CPU" in by_name["rtx-tensorrt-int8"]["measured_with"]


def test_artifacts_carry_preprocessing_and_labels(bundle):
    import openvino as ov

    model = onnx.load(str(bundle / "x86-onnxruntime-int8.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["edgeseg.label_names"]) == ["background", "organ", "lesion"]
    assert json.loads(meta["edgeseg.preprocessing"])["normalization"] == "zscore"
    assert meta["edgeseg.precision"] == "int8"
    ir = ov.Core().read_model(str(bundle / "x86-avx512-openvino-int8.xml"))
    assert json.loads(ir.get_rt_info(["edgeseg", "edgeseg.label_names"]).astype(str))[1] == "organ"


def test_tensorrt_qdq_onnx_is_symmetric_int8(bundle):
    model = onnx.load(str(bundle / "rtx-tensorrt-int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points
    for zp in zero_points:
        arr = onnx.numpy_helper.to_array(inits[zp])
        assert arr.dtype == np.int8 and not arr.any()
    details = read_manifest(bundle)["artifacts"][-1]["details"]
    assert details["trtexec"].startswith("trtexec --onnx=rtx-tensorrt-int8.onnx")
    assert "--int8" in details["trtexec"] and "--minShapes=image:1x1x128x128" in details["trtexec"]


def test_verify_detects_tampering(bundle, tmp_path):
    assert _run("verify", bundle).exit_code == 0
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    target = copy / "x86-avx512-openvino-int8.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert verify_bundle(copy) == ["x86-avx512-openvino-int8.bin: sha256 mismatch (modified or corrupted)"]
    result = _run("verify", copy)
    assert result.exit_code == 3 and "sha256 mismatch" in result.output
    with pytest.raises(EdgesegError, match="failed verification"):
        load_bundle(copy)


def test_refuses_overwrite_and_missing_calibration(bundle, phantom_demo):
    result = _run("compress", default_checkpoint(), "--int8", "--calib", phantom_demo, "--out", bundle)
    assert result.exit_code == 2 and "--force" in result.output
    result = _run("compress", default_checkpoint(), "--int8", "--out", bundle.parent / "nocalib")
    assert result.exit_code == 2 and "never calibrates on random data" in result.output
    assert not (bundle.parent / "nocalib").exists()


def test_calibration_overlapping_evaluation_is_refused(phantom_demo, tmp_path):
    spec = read_spec(default_checkpoint())
    calib = build_calibration_set(phantom_demo, spec.preprocessing, 2, size=4, split="val")
    path = save_calibration(tmp_path / "val.npz", calib)
    result = _run("compress", default_checkpoint(), "--int8", "--calib", path, "--eval-data", phantom_demo,
                  "--targets", "onnx", "--out", tmp_path / "b")
    assert result.exit_code == 2 and "shares" in result.output and "evaluation cases" in result.output
    assert not (tmp_path / "b").exists()


def test_interrupted_compress_leaves_no_partial_bundle(phantom_demo, tmp_path, monkeypatch):
    from edgeseg.targets import openvino_backend

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(openvino_backend.OpenVinoTarget, "build", fail)
    cfg = CompressConfig(checkpoint=default_checkpoint(), out=tmp_path / "b", calib=phantom_demo, calib_size=4,
                         eval_cases=2, targets=["onnx", "openvino"])
    with pytest.raises(KeyboardInterrupt):
        compress(cfg)
    assert list(tmp_path.iterdir()) == []


def test_fp16_gpu_profile_keeps_norms_float(phantom_demo, tmp_path):
    manifest = compress(CompressConfig(checkpoint=default_checkpoint(), out=tmp_path / "b", precision="fp16",
                                       eval_data=phantom_demo, eval_cases=1, targets=["tensorrt", "onnx"]))
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    assert "rtx-onnxruntime-fp16" in by_name and "rtx-tensorrt-fp16" in by_name
    assert manifest["calibration"] is None
    half = onnx.load(str(tmp_path / "b" / "rtx-onnxruntime-fp16.onnx"))
    dtypes = {i.name: i.data_type for i in half.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes.values()
    to_fp32 = {o for n in half.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT
               for o in n.output}
    ln = [n for n in half.graph.node if n.op_type == "LayerNormalization"]
    assert ln and all(i in to_fp32 for n in ln for i in n.input)  # LayerNorm computes in FP32
    trt = by_name["rtx-tensorrt-fp16"]["details"]["trtexec"]
    assert "--fp16" in trt and "--int8" not in trt and "--precisionConstraints=obey" in trt
    assert by_name["rtx-onnxruntime-fp16"]["not_measured"]  # a CUDA device is not here


def test_calibrate_command_then_compress_from_npz(phantom_demo, tmp_path):
    npz = tmp_path / "calib.npz"
    result = _run("calibrate", phantom_demo, "--checkpoint", default_checkpoint(), "--out", npz, "--size", 8)
    assert result.exit_code == 0, result.output
    assert "8 samples" in result.output
    assert _run("calibrate", phantom_demo, "--checkpoint", default_checkpoint(), "--out", npz).exit_code == 2
    result = _run("compress", default_checkpoint(), "--int8", "--calib", npz, "--eval-data", phantom_demo,
                  "--eval-cases", 2, "--targets", "onnx", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "b")
    assert manifest["calibration"]["size"] == 8 and [a["name"] for a in manifest["artifacts"]][-1] == "x86-onnxruntime-int8"


def test_compress_with_pruning_reports_dice_per_stage(phantom_demo, tmp_path):
    manifest = compress(CompressConfig(checkpoint=default_checkpoint(), out=tmp_path / "b", calib=phantom_demo,
                                       calib_size=8, eval_cases=2, targets=["onnx"], prune=0.3, latency_repeats=4,
                                       align=16))
    pruning = manifest["pruning"]
    assert set(pruning["dice"]) == {"before", "after_pruning", "after_bn_recalibration"}
    assert pruning["dice"]["before"]["organ"]["dice"] > 0.9
    assert manifest["macs"]["final"] < 0.7 * manifest["macs"]["original"]
    assert manifest["params"]["final"] < manifest["params"]["original"]
    # --align 16: kept widths in multiples of 16 (what an INT8 kernel fills), narrower layers left to the ratio
    assert pruning["round_to"] == 16 and "widths in multiples of 16" in pruning["summary"]
    pruned = {k: w for k, w in pruning["widths"].items() if w[1] != w[0] and "num_heads" not in k}
    assert pruned and all(after % 16 == 0 or before < 16 for before, after in pruned.values()), pruning["widths"]
    assert prune_alignment(None, "int8") is None and prune_alignment(0, "int8") is None  # opt-in (issue K)
    reference = manifest["artifacts"][0]
    assert reference["baseline"]["checkpoint"] == default_checkpoint().name  # the unpruned model, timed too
    assert reference["baseline"]["latency"]["p50_ms"] > 0
    # the bundle's reference checkpoint is the pruned model and loads without the original architecture sizes
    from edgeseg.checkpoint import load_checkpoint

    model, spec = load_checkpoint(tmp_path / "b" / reference["files"]["model"])
    assert spec.pruning and sum(p.numel() for p in model.parameters()) == manifest["params"]["final"]


def test_calib_from_checkpoint_uses_recorded_training_cases(phantom_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_DATA", str(phantom_demo.parent))  # the checkpoint records dataset "phantom"
    manifest = compress(CompressConfig(checkpoint=default_checkpoint(), out=tmp_path / "b", calib_from_checkpoint=True,
                                       calib_size=6, eval_cases=2, targets=["onnx"], latency_repeats=3))
    spec = read_spec(default_checkpoint())
    assert set(manifest["calibration"]["cases"]) <= set(spec.data["train_cases"])
    assert manifest["evaluation"]["cases"] == spec.data["val_cases"][:2]
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(EdgesegError, match="not under"):
        compress(CompressConfig(checkpoint=default_checkpoint(), out=tmp_path / "c", calib_from_checkpoint=True))


def test_prune_command_writes_a_loadable_pruned_checkpoint(phantom_demo, tmp_path):
    out = tmp_path / "p.ckpt"
    result = _run("prune", default_checkpoint(), "--data", phantom_demo, "--ratio", 0.25, "--calib-images", 8,
                  "--align", 8, "--out", out)
    assert result.exit_code == 0, result.output
    assert "after bn recalibration" in result.output and "MACs" in result.output
    from edgeseg.checkpoint import load_checkpoint

    model, spec = load_checkpoint(out)
    assert spec.pruning["report"]["dice"]["before"]["organ"]["dice"] > 0.9
    assert spec.pruning["report"]["params_after"] == sum(p.numel() for p in model.parameters())
    assert spec.pruning["report"]["round_to"] == 8 and "widths in multiples of 8" in result.output
    result = _run("prune", default_checkpoint(), "--data", phantom_demo, "--out", tmp_path / "q.ckpt")
    assert result.exit_code == 64 and "exactly one of --ratio and --macs" in result.output
