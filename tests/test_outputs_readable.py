"""Outputs a person can read, runs without noise (issue H items 9 and 10): `infer`'s masks hold the label values
(a grey PNG every reader takes as labels), `--overlay` adds the mask in colour (a palette PNG whose pixels are
still the label values) and an overlay with outlines and a legend of the bundle's label names; every output path
is checked before any model call; and `compress` prints its limits as text, without torch's torchvision or
NNCF's subset-size warnings. Real bundles, runtimes and files throughout."""
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.data.io import read_label
from edgeseg.infer.outputs import label_colours, overlay_png

NOISE = ("torchvision is not installed", "smaller than the requested subset size", "max_dice_drop_points",
         "ms/image None", "model None")


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _images(phantom_demo, cases):
    return [phantom_demo / "imagesTr" / f"phantom_{c:04d}_0000.png" for c in cases]


@pytest.fixture(scope="module")
def segmented(bundle, phantom_demo, tmp_path_factory):
    """Four phantom images segmented by the INT8 bundle (OpenVINO), with overlays."""
    out = tmp_path_factory.mktemp("readable") / "masks"
    res = _run("infer", bundle, *_images(phantom_demo, range(4)), "-o", out, "--overlay", "--backend", "openvino")
    assert res.exit_code == 0, res.output
    return out


def test_mask_holds_label_values_and_the_colour_copy_shows_them(segmented):
    colours = label_colours(3)
    for case in (f"phantom_{i:04d}" for i in range(4)):
        with Image.open(segmented / f"{case}.png") as im:
            assert im.mode == "L"  # what every tool reads as labels: 0 background, 1 organ, 2 lesion
            values = np.asarray(im)
        assert set(np.unique(values)) <= {0, 1, 2} and values.max() > 0
        assert (read_label(segmented / f"{case}.png")[0] == values).all()
        with Image.open(segmented / f"{case}_colour.png") as im:
            assert im.mode == "P"
            assert (np.asarray(im) == values).all()  # the palette copy: the same pixel values …
            palette = np.array(im.getpalette()[:9]).reshape(3, 3)
        assert (palette == colours).all() and len({tuple(c) for c in palette}) == 3  # … shown in three colours
        assert (read_label(segmented / f"{case}_colour.png")[0] == values).all()  # edgeseg reads it as labels


def test_infer_masks_serve_as_labels_for_evaluate(segmented, phantom_demo, tmp_path):
    """A dataset whose labelsTr are infer's masks (half of them the colour copies): the FP32 model scored against
    the INT8 model's masks."""
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.demo import default_checkpoint
    from edgeseg.evaluation import evaluate_checkpoint

    data = tmp_path / "pseudo"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    shutil.copy(phantom_demo / "dataset.json", data)
    for i, image in enumerate(_images(phantom_demo, range(4))):
        shutil.copy(image, data / "imagesTr")
        case = image.name.replace("_0000.png", "")
        shutil.copy(segmented / f"{case}{'_colour' if i % 2 else ''}.png", data / "labelsTr" / f"{case}.png")
    model, spec = load_checkpoint(default_checkpoint())
    result = evaluate_checkpoint(model, spec, data, "all")
    assert result["num_cases"] == 4 and "lesion" in result["mean"]
    assert result["mean"]["organ"]["dice"] > 0.9  # labels read as values: FP32 and INT8 masks agree


def test_nnunet_style_readers_get_the_label_values(segmented):
    """nnU-Net's NaturalImage2DIO reads PNG segmentations with skimage.io.imread (imageio underneath), which
    applies a palette: the mask must be the grey file, and it reads as the label values."""
    skimage_io = pytest.importorskip("skimage.io")
    mask_file = segmented / "phantom_0001.png"
    assert (np.asarray(skimage_io.imread(str(mask_file))) == np.asarray(Image.open(mask_file))).all()


def test_overlay_outlines_each_structure_and_names_the_labels():
    image = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (1, 96, 1))
    mask = np.zeros((96, 96), np.uint8)
    mask[20:70, 20:70] = 1
    mask[40:50, 40:50] = 2
    rgb = overlay_png(image, mask, ["background", "organ", "lesion", "cyst"])
    colours = label_colours(4)
    assert rgb.shape[0] >= 96 and rgb.shape[1] > 96  # the legend sits beside the image
    assert (rgb[20, 30] == colours[1]).all() and (rgb[45, 40] == colours[2]).all()  # outlines in full colour
    assert not (rgb[30, 30] == colours[1]).all() and rgb[30, 30][0] > rgb[30, 30][1]  # inside: tinted only
    assert (rgb[5, 5] == rgb[5, 5][0]).all()  # background untouched (grey)
    legend = rgb[:, 96:].reshape(-1, 3)
    for label in (1, 2, 3):  # a swatch per foreground label, the absent one too
        assert (legend == colours[label]).all(axis=1).sum() > 20
    volume = overlay_png(np.repeat(image[..., None], 3, -1), np.stack([mask * 0, mask, mask * 0], -1),
                         ["background", "organ", "lesion"])
    assert (volume[20, 30] == colours[1]).all()  # a volume: the slice with the most foreground


def test_overlay_file_from_infer_carries_the_legend(segmented, phantom_demo):
    overlay = np.asarray(Image.open(segmented / "phantom_0001_overlay.png"))
    image = np.asarray(Image.open(_images(phantom_demo, [1])[0]))
    assert overlay.shape[1] > image.shape[1] and overlay.shape[2] == 3


def test_many_labels_keep_distinct_colours():
    colours = label_colours(40)
    assert len({tuple(c) for c in colours}) == 40 and (colours[0] == 0).all()


def test_every_output_is_checked_before_any_model_call(bundle, phantom_demo, segmented, tmp_path):
    report, out = tmp_path / "run.json", tmp_path / "masks"
    shutil.copytree(segmented, out)  # four cases' outputs of a previous run, with their ledger
    res = _run("infer", bundle, *_images(phantom_demo, range(4)), "-o", out, "--overlay", "--report", report)
    assert res.exit_code == 1 and "pass --force to replace it" in res.output
    summary = json.loads(report.read_text())
    assert summary["model_calls"] == 0 and summary["cases"] == 0 and len(summary["failed"]) == 4
    assert "no image reached the model" in res.output and "None" not in res.output
    res = _run("infer", bundle, *_images(phantom_demo, range(5)), "-o", out, "--overlay", "--report", report,
               "--force")
    assert res.exit_code == 0, res.output
    (out / "phantom_0005.png").write_bytes(b"a radiologist's file")  # taken: only the other five reach the model
    res = _run("infer", bundle, *_images(phantom_demo, range(6)), "-o", out, "--overlay", "--report", report,
               "--force")
    summary = json.loads(report.read_text())
    assert res.exit_code == 1 and summary["model_images"] == 5 and summary["failed"][0]["input"].endswith(
        "phantom_0005_0000.png")
    assert (out / "phantom_0005.png").read_bytes() == b"a radiologist's file"


def test_dice_limits_read_as_text():
    from edgeseg.tuning.search import DiceLimits

    limits = DiceLimits.parse(0.3, "nodule=1.0")
    assert limits.describe(["lung", "nodule"]) == "lung ≤ 0.3 pts, nodule ≤ 1 pts"


def test_export_and_the_nncf_defaults_baseline_are_quiet(tmp_path):
    """torch's ONNX exporter logs one "torchvision is not installed" per torchvision op (4) on every export, and
    NNCF's default subset_size (300) warns on a smaller calibration set; both silenced precisely (a fresh
    process: nothing exported or logged before)."""
    script = textwrap.dedent(f"""
        import numpy as np
        from pathlib import Path
        from edgeseg.benchmark.baselines import nncf_quantize_defaults
        from edgeseg.models import create_model
        from edgeseg.onnx_export import export_onnx
        onnx = export_onnx(create_model("unet", 1, 2, base=4, depth=2), Path("{tmp_path}/m.onnx"), (1, 1, 32, 32))
        calib = {{(32, 32): np.random.default_rng(0).random((8, 1, 32, 32), np.float32)}}
        print(nncf_quantize_defaults(onnx, Path("{tmp_path}/q.xml"), calib)["calibration_samples"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and (tmp_path / "q.xml").is_file() and "8" in proc.stdout.split(), output[-2000:]
    for noise in NOISE:
        assert noise not in output, noise


def test_compress_prints_limits_as_text_and_no_library_noise(phantom_demo, tmp_path):
    from edgeseg.demo import default_checkpoint

    args = ["compress", default_checkpoint(), "--int8", "--calib", phantom_demo, "--calib-size", 8, "--eval-cases", 4,
            "--targets", "openvino", "--max-dice-drop", 0.5, "--per-label", "lesion=1.0", "--tune-cases", 4,
            "--budget-minutes", 0, "--allow-miss", "--latency-repeats", 2, "--out", tmp_path / "b"]
    proc = subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], capture_output=True, text=True,
                          timeout=900)  # a subprocess: library loggers write to the real stdout/stderr
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "organ ≤ 0.5 pts, lesion ≤ 1 pts" in output and "ΔDice organ " in output
    for noise in (*NOISE, "{'"):  # "{'": a Python dict printed raw
        assert noise not in output, noise
