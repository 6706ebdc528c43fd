"""nnU-Net v2 ``3d_fullres`` models of NIfTI volumes: nnU-Net reads a volume as (z, y, x), transposes it by the
plan, resamples anisotropic spacings slice by slice — the import reproduces all of it, and ``edgeseg infer`` on
an FP32 artifact writes nnU-Net's own masks (``predict_from_files``), in the volumes' own geometry."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("nnunetv2")

import nnunet_support  # noqa: E402
from test_nnunet_import import _dice, _nnunet_predict_from_files  # noqa: E402

from edgeseg.cli import app  # noqa: E402
from edgeseg.data import read_label  # noqa: E402


@pytest.fixture(scope="module")
def nnunet_volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet3d")
    dataset = nnunet_support.write_volumes(root / "Dataset998_Volumes", cases=7)
    folder = nnunet_support.write_model(root / "results", dataset, nnunet_support.plans_3d(), steps=30,
                                        configuration="3d_fullres")
    return dataset, folder


def test_a_3d_fullres_model_gives_nnunet_s_own_masks_through_edgeseg_infer(nnunet_volumes, tmp_path):
    import edgeseg
    from edgeseg.importers import import_model

    dataset, folder = nnunet_volumes
    ckpt, record = import_model(folder, tmp_path / "m.ckpt", data=dataset, parity_cases=3)
    assert record["configuration"] == "3d_fullres"
    assert record["parity"]["pixel_agreement"]["min"] >= 0.999, record["parity"]
    edgeseg.compress(ckpt, targets="onnx", precision="fp32", out=tmp_path / "b.bundle", latency_repeats=2)
    val = json.loads((dataset / "splits.json").read_text())["val"]
    cases = [[dataset / "imagesTr" / f"{cid}_{c:04d}.nii.gz" for c in range(2)] for cid in val]
    res = CliRunner().invoke(app, ["infer", str(tmp_path / "b.bundle"), *[str(f) for files in cases for f in files],
                                   "-o", str(tmp_path / "ours"), "--backend", "onnxruntime"])
    assert res.exit_code == 0, res.output
    _nnunet_predict_from_files(folder, cases, tmp_path / "theirs")
    foreground = 0
    for cid in val:
        theirs, their_geometry = read_label(tmp_path / "theirs" / f"{cid}.nii.gz")
        ours, our_geometry = read_label(next((tmp_path / "ours").glob(f"{cid}*.nii.gz")))
        assert ours.shape == theirs.shape and np.allclose(our_geometry.spacing, their_geometry.spacing)
        foreground += int((theirs == 1).sum())
        for value in (1, 2):
            assert _dice(ours, theirs, value) >= 0.999, (cid, value)
    assert foreground > 1000  # the masks compared are not empty


def test_mirroring_of_a_volume_model_flips_the_axes_nnunet_flips(nnunet_volumes, tmp_path):
    from edgeseg.checkpoint import read_spec
    from edgeseg.importers import import_model

    dataset, folder = nnunet_volumes
    ckpt, record = import_model(folder, tmp_path / "m.ckpt", data=dataset, parity_cases=1, mirroring=True)
    assert record["parity"]["pixel_agreement"]["min"] >= 0.999, record["parity"]
    assert read_spec(ckpt).preprocessing.mirror_axes == (2, 0, 1)  # nnU-Net's (z, x, y) on edgeseg's (x, y, z)


@pytest.mark.parametrize("current, new", [((0.9, 0.9, 3.0), (1.2, 1.2, 2.5)),   # coarse input axis: separate
                                          ((1.0, 1.0, 1.0), (1.0, 1.0, 4.0)),   # coarse target axis: separate
                                          ((0.8, 1.0, 1.1), (1.3, 1.3, 1.3))])  # isotropic enough: all at once
def test_volume_resampling_is_nnunet_s_both_ways(current, new):
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape

    from edgeseg.data.native import resample, separate_axis

    image = np.random.default_rng(0).normal(size=(2, 23, 31, 11)).astype(np.float32)
    shape = tuple(int(v) for v in compute_new_shape(image.shape[1:], current, new))
    for order, data, there, (a, b) in [(3, image, shape, (current, new)), (1, image, shape, (current, new)),
                                       (1, image[:, :17, :19, :7], image.shape[1:], (new, current))]:
        theirs = resample_data_or_seg_to_shape(data, there, a, b, is_seg=False, order=order, order_z=0,
                                               force_separate_z=None)
        ours = resample(data, there, order, separate=separate_axis(a, b))
        assert ours.shape == theirs.shape and np.allclose(ours, theirs, atol=1e-5), (order, a, b)


def test_hostile_geometry_and_axes_are_refused_in_one_line():
    import torch

    from edgeseg.data.native import resample
    from edgeseg.errors import EdgesegError
    from edgeseg.models.adapted import Adapted

    with pytest.raises(EdgesegError, match="at the model's spacing, more than"):  # a header spacing 10⁴× the plan's
        resample(np.zeros((1, 10, 10, 10), np.float32), (100000, 1000, 1000), 3)
    for axes in (["a", 1, 0], [0, 0, 1], "zyx", [0.5, 1, 2]):
        with pytest.raises(EdgesegError, match="a permutation of the spatial axes"):
            Adapted(torch.nn.Identity(), spatial_axes=axes)
