"""Target profiles, the fragile-ops plan, TensorRT command generation and calibration-set selection."""
import numpy as np
import onnx
import pytest
import torch

from edgeseg.calibration import build_calibration_set, load_calibration, save_calibration
from edgeseg.data import PreprocessSpec
from edgeseg.errors import EdgesegError
from edgeseg.models import create_model
from edgeseg.onnx_export import export_onnx
from edgeseg.targets import get_target, list_profiles, load_profile
from edgeseg.targets.float_nodes import plan_float_nodes
from edgeseg.targets.tensorrt import gpu_missing, input_shapes, trtexec_command


@pytest.fixture(scope="module")
def hybrid_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("hybrid", 2, 3, base=4, depth=2, embed_dim=16, num_heads=2, img_size=32,
                         norm="instance", fusion="cross_attention")
    return onnx.load(str(export_onnx(model, tmp_path_factory.mktemp("m") / "h.onnx", (2, 2, 32, 32))))


def test_every_shipped_profile_loads():
    names = list_profiles()
    assert {"x86-avx512-openvino-int8", "x86-onnxruntime-int8", "rtx-tensorrt-int8", "jetson-orin-tensorrt-int8"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert get_target(profile.target).name == profile.target
    for target in ("onnx", "openvino", "tensorrt", "torch"):
        for profile in get_target(target).default_profiles.values():
            assert profile in names


def test_bad_profiles_are_refused(tmp_path):
    with pytest.raises(EdgesegError, match="unknown target profile 'nope'"):
        load_profile("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('target = "openvino"\nprecision = "int4"\n')
    with pytest.raises(EdgesegError, match="precision must be one of"):
        load_profile(bad)
    bad.write_text('target = "openvino"\nprecision = "int8"\nthreds = 2\n')
    with pytest.raises(EdgesegError, match="unknown profile keys"):
        load_profile(bad)
    with pytest.raises(EdgesegError, match="unknown target"):
        get_target("coreml")


def test_fragile_preset_finds_every_group(hybrid_onnx):
    plan = plan_float_nodes(hybrid_onnx)
    reasons = {n["reason"] for n in plan}
    assert {f"preset @{g}" for g in ("layernorm", "softmax", "gelu", "residual_add", "instancenorm", "logits")} <= reasons
    logits = [n for n in plan if n["reason"] == "preset @logits"]
    assert len(logits) == 1 and logits[0]["op_type"] == "Conv" and logits[0]["module"] == "decoder.head"
    residual = [n for n in plan if n["reason"] == "preset @residual_add"]
    assert residual and all(n["op_type"] == "Add" for n in residual)
    # the attention-gate Add (theta_x + phi_g) and the positional-embedding Add are not transformer residuals
    assert not any(n["module"].startswith("decoder") for n in residual)


def test_keep_float_and_quantize_patterns(hybrid_onnx):
    base = plan_float_nodes(hybrid_onnx)
    more = plan_float_nodes(hybrid_onnx, keep_float=["ConvTranspose", "decoder.ups.0.*"])
    added = {n["name"] for n in more} - {n["name"] for n in base}
    assert added and all(n["reason"].startswith("--keep-float") for n in more if n["name"] in added)
    fewer = plan_float_nodes(hybrid_onnx, quantize=["@gelu", "@residual_add"])
    assert not any(n["reason"] in ("preset @gelu", "preset @residual_add") for n in fewer)
    only_gelu = plan_float_nodes(hybrid_onnx, preset=False, keep_float=["@gelu"])
    assert only_gelu and {n["reason"] for n in only_gelu} == {"--keep-float @gelu"}
    with pytest.raises(EdgesegError, match="unknown float-op group"):
        plan_float_nodes(hybrid_onnx, keep_float=["@layernrom"])


def test_tensorrt_shapes_and_commands():
    profile = load_profile("rtx-tensorrt-int8")
    profile.spatial = [(256, 256), (128, 128), (512, 512)]
    shapes = input_shapes(profile, 1, (256, 256))
    assert shapes == {"min": (1, 1, 128, 128), "opt": (1, 1, 256, 256), "max": (8, 1, 512, 512)}
    cmd = trtexec_command("m.onnx", "m.engine", shapes, "int8", ["ln"], 2048)
    assert "--int8" in cmd and "--fp16" in cmd and "--optShapes=image:1x1x256x256" in cmd
    assert "--memPoolSize=workspace:2048M" in cmd and "layerPrecisions" not in cmd  # QDQ decides INT8 placement
    fp16 = trtexec_command("m.onnx", "m.engine", shapes, "fp16", ["node_layer_norm", "node_softmax"])
    assert "--int8" not in fp16 and "--layerPrecisions=node_layer_norm:fp32,node_softmax:fp32" in fp16


@pytest.mark.gpu
def test_tensorrt_engine_builds_and_runs_on_gpu(tmp_path):
    reason = gpu_missing()
    if reason:
        pytest.skip(f"TensorRT engine test needs TensorRT and an NVIDIA GPU: {reason}")
    from edgeseg.bundle import load_bundle
    from edgeseg.compression.pipeline import CompressConfig, compress
    from edgeseg.demo import default_checkpoint, ensure_phantom
    from edgeseg.targets.tensorrt import build_bundle_engines

    data = ensure_phantom(tmp_path)
    out = tmp_path / "b"
    compress(CompressConfig(checkpoint=default_checkpoint(), out=out, calib=data, calib_size=8, eval_cases=4,
                            targets=["tensorrt"]))
    built = build_bundle_engines(out)  # the engine compress built is rebuilt and re-registered
    manifest = load_bundle(out)
    artifact = next(a for a in manifest["artifacts"] if a["runtime"] == "tensorrt")
    assert built and any(role.startswith("engine:") for role in artifact["files"])
    runner = get_target("tensorrt").load(out, artifact)
    x = np.random.default_rng(0).standard_normal((2, 1, 128, 128)).astype(np.float32)
    reference = get_target("onnxruntime").load(out, manifest["artifacts"][1])(x)
    assert (runner(x).argmax(1) == reference.argmax(1)).mean() > 0.97


def test_stratified_calibration_covers_empty_and_lesion_slices(phantom3d, tmp_path):
    pre = PreprocessSpec((32, 32), ["phantom0", "phantom1"])
    calib = build_calibration_set(phantom3d, pre, model_dims=2, size=12, strategy="stratified", seed=1, split="all")
    fractions = [s["foreground_fraction"] for s in calib.manifest["samples"]]
    assert calib.inputs[(32, 32)].shape == (12, 2, 32, 32) and len(fractions) == 12
    assert any(f == 0 for f in fractions) and sum(f > 0 for f in fractions) >= 6
    assert all(s["slice"] is not None for s in calib.manifest["samples"])  # a 2D model samples slices
    path = save_calibration(tmp_path / "c.npz", calib)
    again = load_calibration(path)
    assert again.manifest == calib.manifest and np.array_equal(again.inputs[(32, 32)], calib.inputs[(32, 32)])
    rand = build_calibration_set(phantom3d, pre, 2, size=12, strategy="random", seed=1, split="all")
    assert rand.manifest["strategy"] == "random"
    multi = build_calibration_set(phantom3d, pre, 2, size=4, split="all", sizes=[(32, 32), (48, 48)])
    assert multi.inputs[(48, 48)].shape == (4, 2, 48, 48)


def test_calibration_refuses_bad_requests(phantom2d, tmp_path):
    pre = PreprocessSpec((32, 32), ["phantom0"])
    with pytest.raises(EdgesegError, match="--strategy"):
        build_calibration_set(phantom2d, pre, 2, strategy="best")
    with pytest.raises(EdgesegError, match="channels"):
        build_calibration_set(phantom2d, PreprocessSpec((32, 32), ["a", "b"]), 2)
    with pytest.raises(EdgesegError, match="no train cases left"):
        build_calibration_set(phantom2d, pre, 2, case_ids=["phantom_0001"], exclude=["phantom_0001"])
    bogus = tmp_path / "x.npz"
    np.savez(bogus, a=np.zeros(2))
    with pytest.raises(EdgesegError, match="not an edgeseg calibration set"):
        load_calibration(bogus)


def test_conv_transpose_rewrite_is_exact(hybrid_onnx, tmp_path):
    import onnxruntime as ort

    from edgeseg.targets.onnx_rewrites import conv_transpose_to_depth_to_space, fix_spatial_size

    model = onnx.ModelProto()
    model.CopyFrom(hybrid_onnx)
    assert conv_transpose_to_depth_to_space(model) == 2  # depth 2: two up-sampling stages
    assert not any(n.op_type == "ConvTranspose" for n in model.graph.node)
    fix_spatial_size(model, (32, 32))
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((2, 2, 32, 32)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(run(model) - run(hybrid_onnx)).max() < 1e-4
    kept = onnx.ModelProto()
    kept.CopyFrom(hybrid_onnx)
    names = {n.name for n in kept.graph.node if n.op_type == "ConvTranspose"}
    assert conv_transpose_to_depth_to_space(kept, keep=names) == 0  # --keep-float ConvTranspose wins


def test_runtime_settings_of_a_profile_reach_the_loaded_session(phantom_demo, tmp_path):
    """ONNX Runtime spinning and OpenVINO CPU pinning are recorded in the artifact and applied at load."""
    from typer.testing import CliRunner

    from edgeseg.bundle import manifest_artifacts, read_manifest
    from edgeseg.cli import app
    from edgeseg.demo import default_checkpoint

    for name, shipped, line in (("x86-onnxruntime-int8", "intra_op_spinning = false", "intra_op_spinning = true"),
                                ("x86-avx512-openvino-int8", "cpu_pinning = true", "cpu_pinning = false")):
        text = list_profiles()[name].read_text()
        assert shipped in text  # the setting that held p99 under load (issue K) is recorded in the shipped profile
        (tmp_path / f"{name}-set.toml").write_text(text.replace(shipped, line))
    args = ["compress", default_checkpoint(), "--int8", "--calib", phantom_demo, "--calib-size", 4, "--eval-cases", 2,
            "--target-profile", tmp_path / "x86-onnxruntime-int8-set.toml",
            "--target-profile", tmp_path / "x86-avx512-openvino-int8-set.toml", "--out", tmp_path / "b"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    artifacts = {a.runtime: a for a in manifest_artifacts(read_manifest(tmp_path / "b"))}
    ort_session = get_target("onnxruntime").load(tmp_path / "b", artifacts["onnxruntime"], 2).session
    assert ort_session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    ov_compiled = get_target("openvino").load(tmp_path / "b", artifacts["openvino"], 2).compiled
    assert ov_compiled.get_property("ENABLE_CPU_PINNING") is False
