import json
import shutil

import numpy as np
import pytest
from PIL import Image

from edgeseg.data import NnUNetDataset, PreprocessSpec, write_phantom_dataset
from edgeseg.data.preprocessing import resize_linear, resize_nearest
from edgeseg.errors import EdgesegError
from edgeseg.inference import predict_logits


def test_phantom_2d_reads_back_with_splits(phantom2d):
    ds = NnUNetDataset(phantom2d)
    assert ds.label_names == ["background", "organ", "lesion"]
    assert len(ds.cases) == 12
    train, val = ds.split("train"), ds.split("val")
    assert set(train).isdisjoint(val) and len(train) + len(val) == 12
    case = ds.load(val[0])
    assert case.image.shape == (1, 64, 64) and case.image.dtype == np.float32
    assert set(np.unique(case.label)) <= {0, 1, 2} and 1 in case.label


def test_phantom_3d_multichannel_keeps_geometry(phantom3d):
    ds = NnUNetDataset(phantom3d)
    case = ds.load(ds.split("all")[0])
    assert case.image.shape[0] == 2 and case.spatial_dims == 3
    assert case.geometry.spacing == (1.0, 1.0, 2.0)
    assert np.allclose(np.diag(case.geometry.affine), [1, 1, 2, 1])


def test_phantom_is_deterministic(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", cases=3, size=32, seed=7)
    b = write_phantom_dataset(tmp_path / "b", cases=3, size=32, seed=7)
    da, db = NnUNetDataset(a), NnUNetDataset(b)
    assert da.fingerprint(da.split("all")) == db.fingerprint(db.split("all"))


@pytest.mark.parametrize("name,channels,ndim", [
    ("Dataset001_KvasirSEG", 3, 2), ("Dataset002_ChestXrayLungs", 1, 2), ("Dataset003_ThyroidUS", 1, 2),
    ("Dataset004_DriveVessels", 3, 2), ("Dataset005_BraTSMini", 2, 3)])
def test_real_datasets_load(shared_data, name, channels, ndim):
    ds = NnUNetDataset(shared_data / name)
    case = ds.load(ds.split("val")[0])
    assert case.image.shape[0] == channels and case.spatial_dims == ndim
    assert case.label.shape == case.image.shape[1:]
    assert case.label.max() >= 1
    if ndim == 3:
        assert case.geometry.affine is not None and len(case.geometry.spacing) == 3


def test_real_split_comes_from_splits_json(shared_data):
    ds = NnUNetDataset(shared_data / "Dataset002_ChestXrayLungs")
    splits = json.loads((ds.root / "splits.json").read_text())
    assert ds.split("val") == splits["val"]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return NnUNetDataset(dst, require_labels=False)


def test_missing_label_names_the_file(phantom2d, tmp_path):
    ds = _copy(phantom2d, tmp_path / "d")
    victim = ds.cases[ds.split("all")[0]].label_file
    victim.unlink()
    with pytest.raises(EdgesegError, match=victim.name.split(".")[0] + ".*missing label"):
        NnUNetDataset(tmp_path / "d")


def test_size_mismatch_names_the_file(phantom2d, tmp_path):
    ds = _copy(phantom2d, tmp_path / "d")
    cid = ds.split("all")[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(ds.cases[cid].label_file)
    with pytest.raises(EdgesegError, match=f"{cid}.png: label size"):
        ds.load(cid)


def test_unexpected_label_values_are_named(phantom2d, tmp_path):
    ds = _copy(phantom2d, tmp_path / "d")
    cid = ds.split("all")[0]
    label = np.zeros((64, 64), np.uint8)
    label[3, 3] = 7
    Image.fromarray(label).save(ds.cases[cid].label_file)
    with pytest.raises(EdgesegError, match=r"unexpected label values \[7\]"):
        ds.load(cid)


def test_unreadable_file_is_named(phantom2d, tmp_path):
    ds = _copy(phantom2d, tmp_path / "d")
    cid = ds.split("all")[0]
    ds.cases[cid].image_files[0].write_bytes(b"not a png")
    with pytest.raises(EdgesegError, match=f"{cid}_0000.png: unreadable"):
        ds.load(cid)


def test_wrong_channel_count_is_named(phantom2d, tmp_path):
    ds = _copy(phantom2d, tmp_path / "d")
    cid = ds.split("all")[0]
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(ds.cases[cid].image_files[0])
    with pytest.raises(EdgesegError, match="has 3 channels"):
        ds.load(cid)


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(EdgesegError, match="no dataset.json"):
        NnUNetDataset(tmp_path)


def test_preprocessing_spec_roundtrip_and_hash():
    spec = PreprocessSpec(size=(32, 32), channel_names=["x"], normalization="ct_window", window=(-100, 300))
    again = PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.sha256() == spec.sha256()
    out = spec(np.full((1, 20, 10), 100.0))
    assert out.shape == (1, 32, 32) and np.allclose(out, 0.5)
    with pytest.raises(EdgesegError, match="expected 1 channels"):
        spec(np.zeros((2, 8, 8)))
    with pytest.raises(EdgesegError, match="NaN"):
        spec(np.full((1, 8, 8), np.nan))


def test_zscore_and_pad_restore_exactly():
    spec = PreprocessSpec(size=(16, 16), channel_names=["x"], resize="pad", clip_percentiles=None)
    img = np.random.default_rng(0).normal(5, 2, (1, 10, 12))
    x = spec(img)
    assert x.shape == (1, 16, 16)
    inner = x[0, 3:13, 2:14]
    assert abs(inner.mean()) < 1e-5 and abs(inner.std() - 1) < 1e-4
    assert np.allclose(spec.restore(x, (10, 12))[0], inner)


def test_resize_helpers_keep_constant_and_labels():
    assert np.allclose(resize_linear(np.full((2, 5, 7), 3.0), (11, 4)), 3.0)
    lab = np.zeros((4, 4), int)
    lab[:2] = 1
    up = resize_nearest(lab, (8, 8))
    assert up.shape == (8, 8) and up[:4].min() == 1 and up[4:].max() == 0


def test_2d_model_on_volume_runs_slice_by_slice():
    spec = PreprocessSpec(size=(8, 8), channel_names=["a", "b"])
    calls = []

    def predictor(batch):
        calls.append(batch.shape)
        logits = np.zeros((batch.shape[0], 3, 8, 8), np.float32)
        logits[:, 2] = 1.0  # always class 2
        return logits

    volume = np.random.default_rng(0).normal(size=(2, 6, 6, 5))
    out = predict_logits(predictor, volume, spec, model_dims=2, batch_size=2)
    assert out.shape == (3, 6, 6, 5) and (out.argmax(0) == 2).all()
    assert [c[0] for c in calls] == [2, 2, 1]
    with pytest.raises(EdgesegError, match="3D model cannot segment a 2D"):
        predict_logits(predictor, volume[..., 0], spec, model_dims=3)
