"""`edgeseg infer` with real ONNX Runtime / OpenVINO artifacts: round trips on PNG, NIfTI and a synthetic DICOM
series, the error cases, and that it never imports torch."""
import hashlib
import json
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.metrics import case_scores


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bundle3d(phantom3d, tmp_path_factory):
    """A tiny 3D U-Net (2 channels, trained on 16³ patches of 32×32×16 volumes), ONNX Runtime FP32."""
    tmp = tmp_path_factory.mktemp("b3d")
    ckpt = tmp / "m3d.ckpt"
    res = _run("train", "--data", phantom3d, "--out", ckpt, "--size", 16, "--resize", "pad", "--epochs", 1,
               "--max-steps", 1, "--batch-size", 2, "--arch", "unet3d", "--arch-arg", "base=4", "--arch-arg", "depth=2")
    assert res.exit_code == 0, res.output
    res = _run("compress", ckpt, "--precision", "fp32", "--targets", "onnx", "--eval-data", phantom3d,
               "--latency-repeats", 2, "--out", tmp / "bundle")
    assert res.exit_code == 0, res.output
    return tmp / "bundle"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_png_round_trip_matches_the_pytorch_model(bundle, phantom_demo, tmp_path):
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.demo import default_checkpoint
    from edgeseg.inference import predict_mask, torch_predictor

    dataset = NnUNetDataset(phantom_demo)
    cases = sorted(dataset.cases)[:5]
    inputs = [phantom_demo / "imagesTr" / f"{c}_0000.png" for c in cases]
    before = {p: _sha(p) for p in inputs}
    out = tmp_path / "out"
    res = _run("infer", bundle, *inputs, "-o", out, "--backend", "onnxruntime", "--probabilities", "--overlay",
               "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    model, spec = load_checkpoint(default_checkpoint())
    for case, path in zip(cases, inputs):
        mask = np.asarray(Image.open(out / f"{case}.png"))
        image = dataset.load(case).image
        assert mask.shape == image.shape[1:] and mask.dtype == np.uint8
        reference = predict_mask(torch_predictor(model), image, spec.preprocessing, 2)  # what `evaluate` does
        assert case_scores(mask, reference, spec.label_names)["foreground"]["dice"] > 0.97  # up to INT8 drift
        prob = np.load(out / f"{case}_probabilities.npy")
        assert prob.shape == (3, *mask.shape) and np.allclose(prob.sum(0), 1, atol=1e-2)
        assert np.array_equal(prob.argmax(0), mask) or (prob.argmax(0) == mask).mean() > 0.999
        overlay = np.asarray(Image.open(out / f"{case}_overlay.png"))  # the image, then a legend beside it
        assert overlay.shape[0] == mask.shape[0] and overlay.shape[1] > mask.shape[1] and overlay.shape[2] == 3
    assert all(_sha(p) == h for p, h in before.items())  # inputs never modified
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cases"] == 5 and report["runtime"] == "onnxruntime" and report["precision"] == "int8"
    assert report["model_images"] == 5 and report["stages_seconds"]["infer"] > 0


def test_auto_backend_says_what_it_chose(bundle, phantom_demo, tmp_path):
    image = phantom_demo / "imagesTr" / "phantom_0000_0000.png"
    res = _run("infer", bundle, image, "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "tensorrt: Python package 'tensorrt' is not installed; openvino (x86-avx512-openvino-int8" in res.output
    res = _run("infer", bundle, image, "-o", tmp_path / "o2", "--backend", "cuda")
    assert res.exit_code == 64 and "--backend" in res.output


def _nifti(path, volume, affine):
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(path))


def test_nifti_round_trip_keeps_the_geometry(bundle3d, phantom3d, tmp_path):
    dataset = NnUNetDataset(phantom3d)
    case = sorted(dataset.cases)[0]
    image = dataset.load(case).image  # (2, 32, 32, 16)
    affine = np.array([[0, -0.8, 0, 10], [0.7, 0, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)
    folder = tmp_path / "in"
    folder.mkdir()
    for c in range(2):
        _nifti(folder / f"patient_{c:04d}.nii.gz", image[c], affine)
    res = _run("infer", bundle3d, folder, "-o", tmp_path / "out", "--probabilities", "--overlay")
    assert res.exit_code == 0, res.output
    out = nib.load(str(tmp_path / "out" / "patient.nii.gz"))
    assert out.shape == image.shape[1:] and np.allclose(out.affine, affine)
    prob = nib.load(str(tmp_path / "out" / "patient_probabilities.nii.gz"))
    assert prob.shape == (*image.shape[1:], 3) and np.allclose(prob.affine, affine)
    assert (tmp_path / "out" / "patient_overlay.png").is_file()


def _dicom_series(folder, volume, spacing=(0.8, 0.7), dz=2.5, origin=(-20.0, 15.0, 40.0)):
    """Write ``volume`` (x, y, z) as an axial series, slices in reverse file order (the reader must sort)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, series
        ds.Modality, ds.PatientID = "MR", "phantom"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (between rows = along y), column spacing (along x)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * dz]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -100
        stored = np.round((volume[:, :, k].T + 100) / 0.5).astype(np.uint16)  # rows = y, columns = x
        ds.PixelData = stored.tobytes()
        ds.save_as(str(folder / f"{volume.shape[2] - 1 - k:03d}.dcm"), enforce_file_format=True)


def test_dicom_series_gives_a_nifti_in_patient_space(tmp_path):
    from edgeseg.infer.dicom import read_dicom_series

    volume = np.random.default_rng(0).uniform(0, 1000, (12, 10, 6)).round(0) / 2
    _dicom_series(tmp_path / "series", volume)
    image, geometry = read_dicom_series(tmp_path / "series")
    assert image.shape == (1, 12, 10, 6) and np.allclose(image[0], volume)
    affine = np.asarray(geometry.affine)
    assert np.allclose(geometry.spacing, (0.8, 0.7, 2.5))
    # voxel (0,0,0) is the first slice's position, LPS → RAS flips x and y
    assert np.allclose(affine @ [0, 0, 0, 1], [20.0, -15.0, 40.0, 1])
    assert np.allclose(affine @ [1, 1, 1, 1], [20.0 - 0.8, -15.0 - 0.7, 42.5, 1])


def test_errors_name_the_file_and_the_rest_is_processed(bundle, bundle3d, phantom_demo, tmp_path):
    good = phantom_demo / "imagesTr" / "phantom_0001_0000.png"
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(rgb)
    nan = tmp_path / "nan.nii.gz"
    vol = np.ones((20, 20, 4), np.float32)
    vol[3, 3, 1] = np.nan
    _nifti(nan, vol, np.eye(4))
    res = _run("infer", bundle, rgb, nan, good, tmp_path / "missing.png", "-o", tmp_path / "out")
    assert res.exit_code == 1
    assert "rgb.png: the model takes 1 channel(s)" in res.output
    assert "nan.nii.gz" in res.output and ("NaN" in res.output or "3D input" in res.output)
    assert "missing.png: not found" in res.output and "3 input(s) failed, 1 segmented" in res.output
    assert (tmp_path / "out" / "phantom_0001.png").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    flat = tmp_path / "flat_0000.png"  # a 2D image to the 3D model (its channels present, so dims decide)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(flat)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "flat_0001.png")
    res = _run("infer", bundle3d, flat, tmp_path / "flat_0001.png", "-o", tmp_path / "out3")
    assert res.exit_code == 1 and "a 2D input to a model made for 3D volumes" in res.output
    broken = tmp_path / "series"
    broken.mkdir()
    (broken / "0.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    res = _run("infer", bundle, broken, good, "-o", tmp_path / "out4")
    assert res.exit_code == 1 and "0.dcm: unreadable DICOM" in res.output


def test_nan_in_a_2d_image_is_refused(bundle, tmp_path):
    path = tmp_path / "nan.tif"
    arr = np.ones((40, 40), np.float32)
    arr[5, 5] = np.nan
    Image.fromarray(arr).save(path)
    res = _run("infer", bundle, path, "-o", tmp_path / "out")
    assert res.exit_code == 1 and "nan.tif: the image contains NaN or Inf values" in res.output


def test_existing_outputs_are_kept_without_force(bundle, phantom_demo, tmp_path):
    image = phantom_demo / "imagesTr" / "phantom_0002_0000.png"
    out = tmp_path / "out"
    assert _run("infer", bundle, image, "-o", out).exit_code == 0
    mask = out / "phantom_0002.png"
    res = _run("infer", bundle, image, "-o", out)
    assert res.exit_code == 1 and "exists (written by a previous edgeseg infer); pass --force" in res.output
    assert _run("infer", bundle, image, "-o", out, "--force").exit_code == 0
    mask.write_bytes(b"keep me")  # changed since edgeseg wrote it: --force does not replace it either
    res = _run("infer", bundle, image, "-o", out, "--force")
    assert res.exit_code == 1 and "changed since edgeseg wrote it" in res.output and mask.read_bytes() == b"keep me"


def test_altered_bundle_fails_before_any_input_is_read(bundle, tmp_path):
    import shutil

    from edgeseg.bundle import read_manifest

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    onnx_file = copy / next(a for a in read_manifest(copy)["artifacts"] if a["runtime"] == "onnxruntime")["files"]["model"]
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10] + b"0123456789")
    res = _run("infer", copy, tmp_path / "does-not-exist.png", "-o", tmp_path / "out")
    assert res.exit_code == 3 and "failed verification" in res.output and "does-not-exist" not in res.output
    assert not (tmp_path / "out").exists()


BLOCK_FULL_INSTALL = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torch_pruning", "nncf", "onnxscript"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def test_full_install_commands_say_so_on_the_runtime_only_install(tmp_path):
    script = BLOCK_FULL_INSTALL + textwrap.dedent(f"""
        from edgeseg.cli import main
        sys.argv = ["edgeseg", "compress", {str(tmp_path / "x.ckpt")!r}, "--out", {str(tmp_path / "b")!r}]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2 and "pip install 'edgeseg[full]'" in proc.stderr and "Traceback" not in proc.stderr


def test_infer_never_imports_torch(bundle, phantom_demo, tmp_path):
    """The runtime-only install: torch, torch-pruning and nncf made unimportable, infer still works."""
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torch_pruning", "nncf", "onnxscript"):
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        from edgeseg.cli import main
        sys.argv = ["edgeseg", "infer", {str(bundle)!r}, {str(phantom_demo / "imagesTr")!r}, "-o", {str(tmp_path / "o")!r},
                    "--backend", "openvino"]
        try:
            main()
        except SystemExit as exit:
            assert not exit.code, exit.code
        assert "torch" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "o").glob("*.png"))) == len(list((phantom_demo / "imagesTr").glob("*.png")))


@pytest.fixture(scope="module")
def bundle3d_one_channel(tmp_path_factory):
    """A tiny 1-channel 3D U-Net bundle (ONNX Runtime FP32) for DICOM series, which carry one channel."""
    from edgeseg.data import write_phantom_dataset

    tmp = tmp_path_factory.mktemp("b3d1")
    data = write_phantom_dataset(tmp / "ds", cases=3, size=32, dims=3, channels=1, seed=5)
    res = _run("train", "--data", data, "--out", tmp / "m.ckpt", "--size", 16, "--resize", "pad", "--epochs", 1,
               "--max-steps", 1, "--batch-size", 2, "--arch", "unet3d", "--arch-arg", "base=4", "--arch-arg", "depth=2")
    assert res.exit_code == 0, res.output
    res = _run("compress", tmp / "m.ckpt", "--precision", "fp32", "--targets", "onnx", "--eval-data", data,
               "--latency-repeats", 2, "--out", tmp / "bundle")
    assert res.exit_code == 0, res.output
    return tmp / "bundle", data


def test_dicom_series_through_infer_matches_the_same_volume_as_nifti(bundle3d_one_channel, tmp_path):
    from edgeseg.infer.dicom import read_dicom_series

    bundle, data = bundle3d_one_channel
    volume = NnUNetDataset(data).load(sorted(NnUNetDataset(data).cases)[0]).image[0]  # (32, 32, 16)
    volume = np.round(volume * 2) / 2  # representable with slope 0.5
    _dicom_series(tmp_path / "in" / "series1", volume)
    _, geometry = read_dicom_series(tmp_path / "in" / "series1")
    _nifti(tmp_path / "in" / "same.nii.gz", volume, np.asarray(geometry.affine))
    res = _run("infer", bundle, tmp_path / "in", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    from_dicom = nib.load(str(tmp_path / "out" / "series1.nii.gz"))
    from_nifti = nib.load(str(tmp_path / "out" / "same.nii.gz"))
    assert from_dicom.shape == volume.shape and np.allclose(from_dicom.affine, geometry.affine)
    assert np.array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))


def test_an_unexpected_failure_of_one_input_stops_only_that_input(bundle3d_one_channel, tmp_path):
    """Issue G item 12: whatever one input raises is one line for it (type and message); the others run."""
    bundle, data = bundle3d_one_channel
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = np.zeros((20, 20, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])  # numpy cannot test it for NaN
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(folder / "rgb.nii.gz"))
    _nifti(folder / "good.nii.gz", NnUNetDataset(data).load(sorted(NnUNetDataset(data).cases)[0]).image[0], np.eye(4))
    res = _run("infer", bundle, folder, "-o", tmp_path / "out")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output  # no traceback
    assert any(line.startswith("error: ") and "rgb.nii.gz: TypeError: " in line for line in res.output.splitlines())
    assert "1 input(s) failed, 1 segmented" in res.output and (tmp_path / "out" / "good.nii.gz").is_file()


def _reoriented(volume, affine, axcodes):
    """The same voxels stored along other axes: ``(array, affine)``, every voxel at the same world position."""
    from nibabel import orientations as nio

    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(axcodes)))
    return nio.apply_orientation(volume, ornt), affine @ nio.inv_ornt_aff(ornt, volume.shape)


def test_any_orientation_gets_the_masks_of_the_training_orientation(bundle3d_one_channel, tmp_path):
    """Issue G item 19: a volume stored LPS or PIR goes to the model in the training volumes' orientation (RAS)
    and its outputs come back on its own axes: they overlay it and equal the RAS volume's, reoriented."""
    bundle, data = bundle3d_one_channel
    volume = NnUNetDataset(data).load(sorted(NnUNetDataset(data).cases)[0]).image[0]
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # the phantom volumes' own: RAS, as in training
    folder = tmp_path / "in"
    folder.mkdir()
    for codes in ("RAS", "LPS", "PIR"):
        _nifti(folder / f"{codes}.nii.gz", *_reoriented(volume, affine, codes))
    res = _run("infer", bundle, folder, "-o", tmp_path / "out", "--probabilities")
    assert res.exit_code == 0, res.output

    def canonical(name):
        return nib.as_closest_canonical(nib.load(str(tmp_path / "out" / name))).get_fdata()

    for codes in ("LPS", "PIR"):
        source = nib.load(str(folder / f"{codes}.nii.gz"))
        for name in (f"{codes}.nii.gz", f"{codes}_probabilities.nii.gz"):
            out = nib.load(str(tmp_path / "out" / name))
            assert out.shape[:3] == source.shape and np.allclose(out.affine, source.affine)
        assert np.allclose(canonical(f"{codes}_probabilities.nii.gz"), canonical("RAS_probabilities.nii.gz"), atol=1e-6)
        assert np.array_equal(canonical(f"{codes}.nii.gz"), canonical("RAS.nii.gz"))
    assert json.loads((bundle / "manifest.json").read_text())["input"]["axcodes"] == ["R", "A", "S"]


def test_training_orientation_is_recorded_in_the_checkpoint_and_the_bundle(bundle3d_one_channel, tmp_path):
    """Issue G item 19: `train` records the volumes' axcodes; `compress` of a checkpoint without them reads them
    from the dataset's volumes."""
    from edgeseg.checkpoint import load_checkpoint, save_checkpoint

    bundle, data = bundle3d_one_channel
    model, spec = load_checkpoint(bundle.parent / "m.ckpt")
    assert spec.data["axcodes"] == ["R", "A", "S"]
    del spec.data["axcodes"]
    save_checkpoint(tmp_path / "older.ckpt", model, spec)
    res = _run("compress", tmp_path / "older.ckpt", "--precision", "fp32", "--targets", "onnx", "--eval-data", data,
               "--eval-cases", 1, "--latency-repeats", 2, "--out", tmp_path / "bundle")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["input"]["axcodes"] == ["R", "A", "S"]


def test_output_nifti_keeps_the_input_header(bundle3d_one_channel, tmp_path):
    """Issue G item 20: masks and probabilities carry the input's header (qform/sform and their codes, units,
    pixdim), only the data type set; a DICOM series' outputs are in scanner coordinates, in mm."""
    bundle, data = bundle3d_one_channel
    volume = NnUNetDataset(data).load(sorted(NnUNetDataset(data).cases)[0]).image[0]
    affine = np.array([[0, -0.8, 0, 10], [0.7, 0, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)
    image = nib.Nifti1Image(volume.astype(np.float32) * 100, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.set_data_dtype(np.int16)  # stored scaled (scl_slope): the masks must not inherit the scaling
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(image, str(folder / "ct.nii.gz"))
    _dicom_series(folder / "series1", np.round(volume * 2) / 2)
    res = _run("infer", bundle, folder, "-o", tmp_path / "out", "--probabilities")
    assert res.exit_code == 0, res.output
    source = nib.load(str(folder / "ct.nii.gz")).header
    for name, dtype in (("ct.nii.gz", np.uint8), ("ct_probabilities.nii.gz", np.float32)):
        header = nib.load(str(tmp_path / "out" / name)).header
        assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
        assert header.get_xyzt_units() == ("mm", "sec") and header.get_data_dtype() == dtype
        assert np.array_equal(header.get_qform(), source.get_qform()) and np.allclose(header.get_sform(), affine)
        assert header.get_zooms()[:3] == source.get_zooms() and header.get_slope_inter() == (None, None)
    dicom = nib.load(str(tmp_path / "out" / "series1.nii.gz")).header
    assert (int(dicom["qform_code"]), int(dicom["sform_code"])) == (1, 1) and dicom.get_xyzt_units()[0] == "mm"
