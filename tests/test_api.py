"""The Python API (docs/api.md): every example of the docs runs as written, and what the API promises — str paths,
the same masks as `edgeseg infer`, tampered bundles refused, bad arrays refused in domain words, calibration
from arrays, unknown options named, and `import edgeseg` without torch."""
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import edgeseg
from edgeseg.data.io import read_array
from edgeseg.demo import default_checkpoint
from edgeseg.infer import InferConfig, run_infer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_every_python_example_of_the_docs_runs_in_order(tmp_path, monkeypatch):
    """The docs cannot rot: each ```python block of docs/api.md runs, in order, in one empty folder."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOCS.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    namespace: dict = {"__name__": "docs_api"}
    for i, block in enumerate(blocks, 1):
        exec(compile(block, f"docs/api.md (python block {i})", "exec"), namespace)
    assert (tmp_path / "phantom.bundle" / "manifest.json").is_file() and (tmp_path / "gate.xml").is_file()
    assert namespace["mask"].shape == (128, 128) and namespace["logits"].shape == (2, 3, 128, 128)


@pytest.fixture(scope="module")
def api_bundle(phantom_demo, tmp_path_factory):
    """One INT8 ONNX Runtime bundle of the bundled checkpoint, built through the API with str paths only and
    calibrated on in-memory arrays of training cases (the first 20 cases are the checkpoint's held-back ones)."""
    out = tmp_path_factory.mktemp("api") / "phantom.bundle"
    pngs = sorted((phantom_demo / "imagesTr").glob("*.png"))[20:]
    images = (np.asarray(Image.open(p)) for p in pngs)
    return edgeseg.compress(str(default_checkpoint()), calibration=images, transform=lambda a: a.astype(np.float32),
                            targets="onnxruntime", eval_data=str(phantom_demo), out=str(out), calib_size=12,
                            eval_cases=4, latency_repeats=3)


def test_compress_takes_str_paths_and_calibrates_on_arrays(api_bundle):
    from edgeseg.benchmark.harness import BenchConfig
    from edgeseg.compression.pipeline import CompressConfig

    assert isinstance(api_bundle, edgeseg.Bundle) and isinstance(api_bundle.path, Path)
    calibration = api_bundle.manifest["calibration"]
    assert calibration["source"] == "arrays" and calibration["size"] == 12 and len(calibration["case_sha256"]) == 12
    assert {(a.runtime, a.precision) for a in api_bundle.artifacts} >= {("onnxruntime", "int8"), ("torch", "fp32")}
    assert api_bundle.verify() == [] and api_bundle.labels == ["background", "organ", "lesion"]
    assert api_bundle.manifest["artifacts"][1]["accuracy"]["cases"] == 4  # drift measured on the held-back cases
    cfg = CompressConfig(checkpoint="m.ckpt", out="b", calib="c.npz", eval_data="d", baseline_checkpoint="e.ckpt")
    assert all(isinstance(getattr(cfg, f), Path) for f in ("checkpoint", "out", "calib", "eval_data", "baseline_checkpoint"))
    assert isinstance(BenchConfig(bundle="b", data="d").bundle, Path)
    infer = InferConfig(bundle="b", inputs="scans", out="o", engine_cache="c")
    assert infer.inputs == [Path("scans")] and isinstance(infer.out, Path) and isinstance(infer.engine_cache, Path)


def test_predictor_gives_what_infer_writes_for_the_same_image(api_bundle, phantom_demo, tmp_path):
    predictor = api_bundle.predictor(backend="onnxruntime")
    assert (predictor.runtime, predictor.precision) == ("onnxruntime", "int8") and "onnxruntime" in predictor.why
    pngs = sorted((phantom_demo / "imagesTr").glob("*.png"))[:3]
    summary = run_infer(InferConfig(bundle=str(api_bundle.path), inputs=[str(p) for p in pngs], out=str(tmp_path),
                                    artifact=predictor.artifact, probabilities=True, batch_size=1))
    assert len(summary["done"]) == 3 and not summary["failed"] and summary["artifact"] == predictor.artifact
    for path, case in zip(pngs, summary["done"]):
        image, _ = read_array(path)  # (1, 128, 128) uint8, as infer reads it
        written = np.asarray(Image.open(tmp_path / f"{case}.png"))
        mask = predictor.predict(image)
        assert mask.dtype == np.uint8 and np.array_equal(mask, written)
        assert np.array_equal(predictor.predict(image[0].astype(np.float64)), written)  # (*spatial), float
        probabilities = np.load(tmp_path / f"{case}_probabilities.npy").astype(np.float32)
        assert np.allclose(predictor.probabilities(image), probabilities, atol=2e-3)


def test_a_tampered_bundle_is_refused_even_unverified(api_bundle, tmp_path):
    copy = Path(shutil.copytree(api_bundle.path, tmp_path / "copy"))
    int8 = next(a for a in api_bundle.artifacts if a.precision == "int8")
    model = copy / int8.files["model"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(edgeseg.EdgesegError, match="sha256"):
        edgeseg.load_bundle(str(copy))
    unverified = edgeseg.load_bundle(copy, verify=False)  # the manifest alone is intact
    assert any(int8.files["model"] in problem for problem in unverified.verify())
    with pytest.raises(edgeseg.EdgesegError, match="sha256"):
        unverified.predictor(artifact=int8.name)
    with pytest.raises(edgeseg.EdgesegError, match="is not the expected"):
        edgeseg.load_bundle(api_bundle.path, expected_digest="0" * 64)


@pytest.mark.parametrize("image, words", [
    (np.zeros((2, 64, 64)), "takes 1 channel"),
    (np.zeros((1, 2, 8, 8, 8)), "2D image or a 3D volume"),
    (np.zeros((1, 8, 8, 8)), "a 3D input to a model made for 2D images"),
    (np.full((64, 64), np.nan), "NaN or Inf"),
    (np.zeros((64, 64), complex), "numeric image array"),
    (np.zeros((0, 0)), "empty"),
    ("not an image", "numeric image array"),
])
def test_bad_input_arrays_are_refused_in_one_line(api_bundle, image, words):
    predictor = api_bundle.predictor()
    with pytest.raises(edgeseg.EdgesegError, match=words) as caught:
        predictor.predict(image)
    assert "\n" not in str(caught.value)


def test_bad_batches_and_affines_are_refused(api_bundle):
    predictor = api_bundle.predictor()
    for batch in (np.zeros((1, 128, 128), np.float32), np.zeros((1, 2, 128, 128), np.float32),
                  np.full((1, 1, 128, 128), np.inf, np.float32)):
        with pytest.raises(edgeseg.EdgesegError, match="batch: "):
            predictor.logits(batch)
    with pytest.raises(edgeseg.EdgesegError, match="affine: only a volume"):
        predictor.predict(np.zeros((64, 64)), affine=np.eye(4))


def test_unknown_options_and_missing_inputs_are_named(tmp_path):
    with pytest.raises(edgeseg.EdgesegError, match=r"unknown option\(s\) 'colour'.*calib_size"):
        edgeseg.compress(default_checkpoint(), calibration=tmp_path, out=tmp_path / "b", colour="red")
    with pytest.raises(edgeseg.EdgesegError, match="INT8 needs calibration data"):
        edgeseg.compress(default_checkpoint(), out=tmp_path / "b")
    with pytest.raises(edgeseg.EdgesegError, match="needs spec="):
        edgeseg.compress(type("Net", (), {"state_dict": None})(), calibration=tmp_path)
    with pytest.raises(edgeseg.EdgesegError, match="unknown option"):
        edgeseg.bench(tmp_path, tmp_path, repeat=3)
    with pytest.raises(edgeseg.EdgesegError, match="unknown option"):
        edgeseg.train(tmp_path, out=tmp_path / "m.ckpt", epoch=3)
    with pytest.raises(edgeseg.EdgesegError, match="not an edgeseg bundle"):
        edgeseg.load_bundle(tmp_path)


def test_a_loaded_model_is_compressed_from_a_checkpoint_of_itself(tmp_path):
    from edgeseg.api.options import checkpoint_file
    from edgeseg.checkpoint import load_checkpoint, read_spec

    model, spec = load_checkpoint(default_checkpoint())
    for i, (given_model, given_spec) in enumerate([(model, spec), ((model, spec), None)]):
        (tmp_path / str(i)).mkdir()
        path = checkpoint_file(given_model, given_spec, tmp_path / str(i))
        assert path.name == "hybrid.ckpt" and read_spec(path).to_dict() == read_spec(default_checkpoint()).to_dict()
    assert checkpoint_file(str(default_checkpoint()), None, tmp_path) == default_checkpoint()


def test_api_names_win_over_same_named_modules():
    import edgeseg.benchmark.harness  # noqa: F401  (binds nothing over the API function)
    from edgeseg.compression.pipeline import CompressConfig  # noqa: F401

    for name in ("compress", "bench", "gate", "train", "evaluate", "prune"):
        assert callable(getattr(edgeseg, name)) and getattr(edgeseg, name).__module__.startswith("edgeseg.api.")
    assert set(edgeseg.__all__) <= set(dir(edgeseg))


def test_import_edgeseg_and_a_predictor_never_import_torch(api_bundle, phantom_demo):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import edgeseg
        from edgeseg.data.io import read_array
        bundle = edgeseg.load_bundle({str(api_bundle.path)!r})
        image, _ = read_array({str(next((phantom_demo / "imagesTr").glob("*.png")))!r})
        mask = bundle.predictor().predict(image)
        assert mask.shape == image.shape[1:], mask.shape
        loaded = sorted(m for m in ("torch", "nncf", "torch_pruning") if m in sys.modules)
        assert not loaded, loaded
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def volume_bundle(phantom3d, tmp_path_factory):
    """A tiny 2-channel 3D U-Net trained one step on 16³ patches, ONNX Runtime FP32, via the API (train → compress)."""
    tmp = tmp_path_factory.mktemp("api3d")
    trained = edgeseg.train(phantom3d, out=tmp / "m3d.ckpt", arch="unet3d", size=16, resize="pad", epochs=1,
                            max_steps=1, batch_size=2, arch_kwargs={"base": 4, "depth": 2})
    assert trained.checkpoint.is_file() and trained.history
    return edgeseg.compress(trained.checkpoint, precision="fp32", targets="onnxruntime", eval_data=phantom3d,
                            latency_repeats=2, out=tmp / "bundle")


def _reoriented(volume, affine, axcodes):
    """``(C, *spatial)`` voxels stored along other axes: ``(array, affine)``, each voxel at the same world position."""
    from nibabel import orientations as nio

    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(axcodes)))
    moved = np.stack([nio.apply_orientation(channel, ornt) for channel in volume])
    return moved, affine @ nio.inv_ornt_aff(ornt, volume.shape[1:])


def test_a_volume_with_its_affine_gets_what_infer_writes(volume_bundle, phantom3d, tmp_path):
    from edgeseg.data.nnunet import NnUNetDataset

    dataset = NnUNetDataset(phantom3d)
    case = dataset.load(sorted(dataset.cases)[0])
    volume, affine = case.image.astype(np.float32), np.asarray(case.geometry.affine)  # RAS, as in training
    assert volume_bundle.manifest["input"]["axcodes"] == ["R", "A", "S"]
    stored, stored_affine = _reoriented(volume, affine, "PIL")
    folder = tmp_path / "in"
    folder.mkdir()
    for c, channel in enumerate(stored):
        nib.save(nib.Nifti1Image(channel, stored_affine), str(folder / f"pil_{c:04d}.nii.gz"))
    summary = run_infer(InferConfig(bundle=volume_bundle.path, inputs=[folder], out=tmp_path / "out",
                                    probabilities=True))
    assert summary["done"] == ["pil"], summary["failed"]
    predictor = volume_bundle.predictor()
    assert predictor.artifact == summary["artifact"]
    written = np.asarray(nib.load(str(tmp_path / "out" / "pil.nii.gz")).dataobj)
    assert np.array_equal(predictor.predict(stored, affine=stored_affine), written)
    probabilities_file = nib.load(str(tmp_path / "out" / "pil_probabilities.nii.gz"))
    written_probabilities = np.moveaxis(np.asarray(probabilities_file.dataobj), -1, 0)
    assert np.allclose(predictor.probabilities(stored, affine=stored_affine), written_probabilities, atol=1e-6)
    # with the affine the model sees the volume in the training orientation; without it, the stored axes
    ras = predictor.probabilities(volume)
    assert np.allclose(_reoriented(ras, affine, "PIL")[0], written_probabilities, atol=1e-5)
    assert not np.array_equal(predictor.probabilities(stored), written_probabilities)
    with pytest.raises(edgeseg.EdgesegError, match="affine: expected"):
        predictor.predict(stored, affine=np.zeros((4, 4)))
