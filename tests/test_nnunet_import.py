"""nnU-Net v2 trained model folders in: the import reproduces nnU-Net's own predictor (``predict_from_files``,
mirroring off) in the images' own geometry — through ``edgeseg infer`` on an FP32 artifact as well — and the
checkpoint pickle and the plan are read as data."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("nnunetv2")

import nnunet_support  # noqa: E402

from edgeseg.cli import app  # noqa: E402
from edgeseg.data import read_label  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402


@pytest.fixture(scope="module")
def nnunet_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    dataset = nnunet_support.write_dataset(root / "Dataset999_Phantom")
    return dataset, nnunet_support.write_model(root / "results", dataset)


def _nnunet_predict_from_files(folder, cases, out):
    """nnU-Net's own predictor on the files (one list of channel files per case), as `nnUNetv2_predict
    --disable_tta -device cpu` runs it."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files([[str(p) for p in files] for files in cases], str(out), save_probabilities=False,
                                 overwrite=True, num_processes_preprocessing=1, num_processes_segmentation_export=1)


def _dice(a, b, value):
    total = (a == value).sum() + (b == value).sum()
    return 1.0 if total == 0 else 2 * ((a == value) & (b == value)).sum() / total


def test_the_import_and_edgeseg_infer_give_nnunet_s_own_masks(nnunet_model, tmp_path):
    import edgeseg
    from edgeseg.importers import import_model

    dataset, folder = nnunet_model
    ckpt, record = import_model(folder, tmp_path / "m.ckpt", data=dataset, parity_cases=4)
    assert record["framework"] == "nnunet" and record["fold"] == "0" and record["mirroring"]["used"] is False
    assert record["parity"]["pixel_agreement"]["min"] >= 0.999, record["parity"]
    assert set(record["files"]) == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"}

    edgeseg.compress(ckpt, targets="onnx", precision="fp32", out=tmp_path / "b.bundle", latency_repeats=3)
    val = json.loads((dataset / "splits.json").read_text())["val"]
    images = [dataset / "imagesTr" / f"{cid}_0000.png" for cid in val]
    res = CliRunner().invoke(app, ["infer", str(tmp_path / "b.bundle"), *map(str, images), "-o", str(tmp_path / "ours"),
                                   "--backend", "onnxruntime"])
    assert res.exit_code == 0, res.output
    _nnunet_predict_from_files(folder, [[p] for p in images], tmp_path / "theirs")
    for cid in val:
        theirs, _ = read_label(tmp_path / "theirs" / f"{cid}.png")
        ours, _ = read_label(next((tmp_path / "ours").glob(f"{cid}*.png")))
        assert ours.shape == theirs.shape  # the image's own size: cropped, resampled and put back
        for value in (1, 2):
            assert _dice(ours, theirs, value) >= 0.999, (cid, value)


def test_a_code_running_pickle_as_checkpoint_final_is_refused(nnunet_model, tmp_path):
    from edgeseg.importers import import_model

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    _, folder = nnunet_model
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    (copy / "fold_0" / "checkpoint_final.pth").write_bytes(pickle.dumps({"network_weights": {}, "x": Boom()}))
    with pytest.raises(EdgesegError, match="refused: the pickle holds a type outside"):
        import_model(copy, tmp_path / "m.ckpt")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "m.ckpt").exists()


def _edited(folder, tmp_path, edit, name=None):
    copy = tmp_path / (name or folder.name)
    shutil.copytree(folder, copy)
    plans = json.loads((copy / "plans.json").read_text())
    edit(plans)
    (copy / "plans.json").write_text(json.dumps(plans))
    return copy


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["configurations"]["2d"]["architecture"]["arch_kwargs"].update(nonlin="os.system"),
     "nonlin 'os.system' is not a torch layer"),
    (lambda p: p["configurations"]["2d"]["architecture"].update(network_class_name="builtins.eval"),
     "nnunet:eval: not a network"),
    (lambda p: p["configurations"]["2d"].update(normalization_schemes=["MyNormalization"]),
     "normalization scheme 'MyNormalization' is not mapped"),
    (lambda p: p["configurations"]["2d"]["resampling_fn_data_kwargs"].update(order=1),
     "differs from nnU-Net's default"),
    (lambda p: p["configurations"]["2d"].update(patch_size=[32, 48, 48]), "2D configurations of 2D image datasets"),
    (lambda p: p["configurations"]["2d"].update(previous_stage="3d_lowres"), "a cascade stage"),
])
def test_a_plan_edgeseg_cannot_reproduce_is_refused_in_one_line(nnunet_model, tmp_path, edit, message):
    from edgeseg.importers import import_model

    copy = _edited(nnunet_model[1], tmp_path, edit)
    with pytest.raises(EdgesegError, match=message) as err:
        import_model(copy, tmp_path / "m.ckpt")
    assert "\n" not in str(err.value) and not (tmp_path / "m.ckpt").exists()


def test_several_folds_need_a_choice(nnunet_model, tmp_path):

    copy = _edited(nnunet_model[1], tmp_path, lambda p: None)
    shutil.copytree(copy / "fold_0", copy / "fold_1")
    res = CliRunner().invoke(app, ["import", str(copy), "--out", str(tmp_path / "m.ckpt")])
    assert res.exit_code != 0 and "2 folds (0, 1); choose one with --fold" in res.output
    res = CliRunner().invoke(app, ["import", str(copy / "fold_1"), "--out", str(tmp_path / "m.ckpt"), "--data",
                                   str(nnunet_model[0]), "--parity-cases", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["fold"] == "1"  # the fold_N folder chooses it; nnU-Net's prints stay off stdout


def test_ct_normalization_is_nnunet_s_with_the_fingerprint_statistics(nnunet_model):
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    from edgeseg.importers.nnunet import _normalization

    plans = nnunet_support.plans("CTNormalization")
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    image = np.random.default_rng(0).uniform(-100, 400, (1, 40, 50)).astype(np.float32)
    theirs = CTNormalization(intensityproperties=props).run(image.copy())
    from edgeseg.data.preprocessing import PreprocessSpec

    spec = PreprocessSpec((48, 48), ["ct"], resize="sliding", **_normalization(plans, plans["configurations"]["2d"],
                                                                              1, "test"))
    np.testing.assert_allclose(spec.normalize(image), theirs, atol=1e-5)


def test_mirroring_tta_is_nnunet_s_and_goes_into_the_spec(nnunet_model, tmp_path):
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.importers import import_model

    dataset, folder = nnunet_model
    ckpt, record = import_model(folder, tmp_path / "m.ckpt", data=dataset, parity_cases=2, mirroring=True)
    assert record["mirroring"] == {"allowed_axes": [0, 1], "used": True}
    assert record["parity"]["pixel_agreement"]["min"] >= 0.999, record["parity"]  # nnU-Net with mirroring on
    assert load_checkpoint(ckpt)[1].preprocessing.mirror_axes == (0, 1)


def test_native_geometry_fields_leave_older_specs_hashes_alone_and_are_checked():
    from edgeseg.data.preprocessing import PreprocessSpec

    plain = PreprocessSpec((64, 64), ["ct"])
    assert set(plain.to_dict()) == {"size", "channel_names", "resize", "normalization", "window", "clip_percentiles",
                                    "version"}  # the keys every spec had before: the same sha256 as then
    native = PreprocessSpec((64, 64), ["ct"], resize="sliding", crop_nonzero=True, spacing=(2.0, 2.0),
                            mirror_axes=(0, 1))
    assert PreprocessSpec.from_dict(native.to_dict()) == native
    for bad, message in [({"resize": "resize", "crop_nonzero": True}, "belong to resize 'sliding'"),
                         ({"resize": "sliding", "mirror_axes": [0, 0]}, "distinct spatial axes"),
                         ({"resize": "sliding", "spacing": [1.0]}, "one positive value per axis"),
                         ({"normalization": "fixed"}, "needs stats"),
                         ({"resize": "sliding", "crop_nonzero": "yes"}, "expected true or false")]:
        with pytest.raises(EdgesegError, match=message):
            PreprocessSpec.from_dict({"size": [64, 64], "channel_names": ["ct"], **bad})


def test_pruning_keeps_nnunet_s_class_and_deep_supervision_heads_whole(nnunet_model, tmp_path):
    import torch

    from edgeseg.checkpoint import load_checkpoint, save_checkpoint
    from edgeseg.importers import import_model
    from edgeseg.pruning.core import prune_model

    model, spec = load_checkpoint(import_model(nnunet_model[1], tmp_path / "m.ckpt")[0])
    heads = [(m.in_channels, m.out_channels) for m in model.decoder.seg_layers]
    report = prune_model(model, (1, 1, 48, 48), ratio=0.5)
    assert report.macs_after < 0.5 * report.macs_before
    assert [m.out_channels for m in model.decoder.seg_layers] == [h[1] for h in heads]  # 3 classes, every head
    assert model.decoder.seg_layers[-1].in_channels < heads[-1][0]  # its input was pruned with the decoder
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, 3, 48, 48)
    reloaded, _ = load_checkpoint(save_checkpoint(tmp_path / "p.ckpt", model, spec))  # the shared encoder once
    x = torch.randn(1, 1, 48, 48)
    assert torch.equal(reloaded(x), model.eval()(x))


def test_without_nnunet_installed_the_import_names_the_extra(nnunet_model, tmp_path, monkeypatch):
    import importlib.util

    from edgeseg.importers import import_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dynamic_network_architectures" else real(name, *a))
    with pytest.raises(EdgesegError, match=r"a nnunet model; importing it needs dynamic_network_architectures "
                                           r"\(pip install 'edgeseg\[nnunet\]'\)"):
        import_model(nnunet_model[1], tmp_path / "m.ckpt")


@pytest.mark.slow
def test_the_committed_nnunet_model_keeps_nnunet_s_masks_and_dice_on_real_chest_xrays(shared_data, tmp_path):
    """A model trained by nnU-Net's own commands (benchmarks/foreign/nnunet_chest): imported, it reproduces
    nnUNetPredictor's masks, and nnU-Net's val Dice on all 65 val cases."""
    from pathlib import Path

    import edgeseg
    from edgeseg.importers import import_model

    folder = (Path(__file__).parents[1] / "benchmarks" / "foreign" / "nnunet_chest" /
              "nnUNetTrainer_10epochs__nnUNetPlans_edge__2d")
    chest = shared_data / "Dataset002_ChestXrayLungs"
    path, record = import_model(folder, tmp_path / "m.ckpt", data=chest, parity_cases=16)  # all 65: README
    assert record["parity"]["cases"] == 16 and record["parity"]["dice"]["lung"]["min"] >= 0.999, record["parity"]
    scores = edgeseg.evaluate(path, chest, split="val")
    assert abs(scores.dice["lung"] - NNUNET_CHEST_VAL_DICE) < 0.002, scores.dice


NNUNET_CHEST_VAL_DICE = 0.9574  # nnUNetv2_predict --disable_tta on the 65 val cases (benchmarks/foreign/README.md)
