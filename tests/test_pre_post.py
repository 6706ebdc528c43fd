"""Issue K: pre- and post-processing in the deployed graph. The end-to-end graph (the image as stored in, the label
map out) must give the host path's masks (PreprocessSpec → model → restore → label_map) on real runtimes."""
import io
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from edgeseg.bundle import read_manifest
from edgeseg.cli import app
from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.inference import label_map
from edgeseg.targets.pre_post import pre_post_models, unsupported, wrap_onnx, wrap_openvino


def _conv_model(channels: int, classes: int, seed: int) -> onnx.ModelProto:
    """A real ONNX model (a 3×3 conv, random weights): ``image`` (N, C, H, W) → ``logits`` (N, classes, H, W)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(classes, channels, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes, "h", "w"])], initializer=[w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _image(rng, shape: tuple[int, int], channels: int) -> np.ndarray:
    """A uint8 (C, H, W) image with structure (a gradient and a bright disc) and noise, like a real scan."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2) < (min(shape) / 4) ** 2
    base = 40 + 120 * xx / shape[1] + 80 * disc
    chans = [base * (0.7 + 0.15 * c) + rng.normal(0, 12, shape) for c in range(channels)]
    return np.clip(np.stack(chans), 0, 255).astype(np.uint8)


SPECS = {
    "zscore_clip": dict(normalization="zscore"),
    "zscore_no_clip": dict(normalization="zscore", clip_percentiles=None),
    "minmax_clip": dict(normalization="minmax", clip_percentiles=(2.0, 98.0)),
    "minmax_no_clip": dict(normalization="minmax", clip_percentiles=None),
    "ct_window": dict(normalization="ct_window", window=(30.0, 200.0)),
    "fixed": dict(normalization="fixed", window=(10.0, 240.0), stats=(120.0, 40.0)),
    "none": dict(normalization="none"),
}


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("channels,classes", [(1, 2), (3, 3)])
def test_the_end_to_end_graph_gives_the_host_path_s_masks(name, channels, classes):
    """Images smaller and larger than the model's size, every normalization, 1 and 3 channels, 2 and 3 classes:
    ONNX Runtime's end-to-end graph and OpenVINO's stitched one give the host path's label map."""
    import openvino as ov

    spec = PreprocessSpec((48, 64), [f"c{i}" for i in range(channels)], **SPECS[name])
    model = _conv_model(channels, classes, seed=channels * 10 + classes)
    logits_only, end_to_end = _session(model), _session(wrap_onnx(model, spec, classes))
    ov_model = ov.convert_model(io.BytesIO(model.SerializeToString()))
    stitched = ov.Core().compile_model(wrap_openvino(ov_model, spec, classes), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(7)
    for shape in [(37, 53), (300, 211), (48, 64)]:
        image = _image(rng, shape, channels)
        logits = logits_only.run(None, {"image": spec(image)[None]})[0][0]
        host = label_map(spec.restore(logits, shape))
        raw = np.ascontiguousarray(np.moveaxis(image, 0, -1))
        got = end_to_end.run(None, {"raw": raw})[0]
        assert got.dtype == np.uint8 and got.shape == shape
        assert (got == host).mean() >= 0.9995, (name, shape, (got == host).mean())
        assert (stitched({0: raw})[0] == got).mean() >= 0.9995, (name, shape)


def test_percentiles_and_moments_in_the_graph_are_numpy_s():
    """The histogram statistics reproduce np.percentile (linear) and the clipped image's mean and std."""
    spec = PreprocessSpec((16, 16), ["x"], normalization="zscore", clip_percentiles=(0.5, 99.5))
    pre, _ = pre_post_models(spec, 2)
    session = _session(pre)
    rng = np.random.default_rng(0)
    for image in [rng.integers(0, 256, (1, 97, 131)).astype(np.uint8), np.full((1, 20, 20), 9, np.uint8),
                  (rng.random((1, 64, 64)) < 0.01).astype(np.uint8) * 255]:
        got = session.run(["image"], {"raw": np.moveaxis(image, 0, -1).copy()})[0][0]
        np.testing.assert_allclose(got, spec(image), atol=2e-4)


def test_what_cannot_go_in_the_graph_is_named():
    assert "volumes" in unsupported(PreprocessSpec((8, 8, 8), ["x"]), 3)
    assert "'pad'" in unsupported(PreprocessSpec((8, 8), ["x"], resize="pad"), 2)
    assert unsupported(PreprocessSpec((8, 8), ["x"]), 2) is None


def _masks(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))
            if not p.stem.endswith(("_colour", "_overlay"))}


def test_infer_takes_uint8_images_through_the_bundle_s_end_to_end_graph(bundle, phantom_demo, tmp_path):
    """compress wrote an end-to-end graph beside each ONNX Runtime/OpenVINO artifact (hashed, its size apart);
    infer sends uint8 images through it, and its masks are the host path's (--probabilities takes the host path)."""
    manifest = read_manifest(bundle)
    built = {a["name"]: a for a in manifest["artifacts"]}
    for name in ("x86-onnxruntime-int8", "x86-avx512-openvino-int8"):
        assert "end_to_end" in built[name]["files"] and "end_to_end" in built[name]["hashes"], built[name]["files"]
        model_bytes = sum(h["bytes"] for role, h in built[name]["hashes"].items() if not role.startswith("end_to_end"))
        assert built[name]["size_bytes"] == model_bytes
    images = sorted((phantom_demo / "imagesTr").glob("*.png"))[:6]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in images:
        shutil.copy(p, inputs / p.name)
    for name in ("x86-onnxruntime-int8", "x86-avx512-openvino-int8"):
        runs = {}
        for extra in ([], ["--probabilities"]):
            out = tmp_path / f"{name}{len(extra)}"
            res = CliRunner().invoke(app, ["infer", str(bundle), str(inputs), "--out", str(out), "--artifact", name,
                                           "--report", str(out / "r.json"), *extra])
            assert res.exit_code == 0, res.output
            runs[bool(extra)] = _masks(out)
            report = json.loads((out / "r.json").read_text())
            assert report["end_to_end_images"] == (0 if extra else len(images)), report
        assert runs[False].keys() == runs[True].keys() and len(runs[False]) == len(images)
        for case, mask in runs[False].items():
            assert (mask == runs[True][case]).mean() >= 0.999, (name, case)


def test_a_tampered_end_to_end_graph_is_refused(bundle, phantom_demo, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    e2e = copy / "x86-onnxruntime-int8.e2e.onnx"
    data = bytearray(e2e.read_bytes())
    data[len(data) // 2] ^= 0xFF
    e2e.write_bytes(bytes(data))
    image = next((phantom_demo / "imagesTr").glob("*.png"))
    res = CliRunner().invoke(app, ["infer", str(copy), str(image), "--out", str(tmp_path / "out")])
    assert res.exit_code != 0 and "x86-onnxruntime-int8.e2e.onnx" in res.output and "Traceback" not in res.output


def test_an_rgb_case_0000_file_is_one_input_for_a_three_channel_model(tmp_path):
    """nnU-Net's RGB datasets (Kvasir) keep all three channels in case_0000.jpg: infer takes it as one input;
    a volume's missing channel files are still refused."""
    from edgeseg.infer.inputs import discover_inputs

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "polyp_0000.jpg")
    (tmp_path / "brain_0000.nii.gz").write_bytes(b"")
    items, problems = discover_inputs([tmp_path], 3)
    assert [(i.case_id, [p.name for p in i.paths]) for i in items] == [("polyp", ["polyp_0000.jpg"])]
    assert problems and problems[0][0] == "brain" and "channel files" in problems[0][1]
