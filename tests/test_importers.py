"""Foreign models in (issue J): MONAI bundles and networks by name, smp save_pretrained folders, state dicts with
--arch — imported into edgeseg checkpoints, checked against the framework's own inference, then compressed."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.errors import EdgesegError

monai = pytest.importorskip("monai", reason="MONAI is in edgeseg[frameworks] (installed by the dev extra)")
smp = pytest.importorskip("segmentation_models_pytorch", reason="smp is in edgeseg[frameworks]")
torch = pytest.importorskip("torch")

LABELS = ["background", "organ", "lesion"]
NET = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [8, 16, 32],
       "strides": [2, 2], "num_res_units": 1}
PRE = [{"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
       {"_target_": "Resized", "keys": "image", "spatial_size": [48, 48], "mode": "bilinear"},
       {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0,
        "clip": True}]


def _trained_unet(phantom_demo, steps: int = 40):
    """A MONAI UNet trained briefly on the phantom the way a MONAI user would (MONAI's loader: PNGs indexed (x, y))."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Resize, ScaleIntensityRange

    torch.manual_seed(0)
    net = UNet(**{k: v for k, v in NET.items() if k != "_target_"})
    image_t = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Resize((48, 48)),
                       ScaleIntensityRange(0, 255, 0.0, 1.0, clip=True)])
    label_t = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Resize((48, 48), mode="nearest")])
    ids = json.loads((phantom_demo / "splits.json").read_text())["train"][:16]
    x = torch.stack([torch.as_tensor(np.asarray(image_t(str(phantom_demo / "imagesTr" / f"{i}_0000.png")))) for i in ids])
    y = torch.stack([torch.as_tensor(np.asarray(label_t(str(phantom_demo / "labelsTr" / f"{i}.png")))) for i in ids])
    opt, loss = torch.optim.Adam(net.parameters(), 3e-3), DiceCELoss(to_onehot_y=True, softmax=True)
    for _ in range(steps):
        opt.zero_grad()
        loss(net(x.float()), y.float()).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def monai_bundle(phantom_demo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("monai") / "phantom_bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    torch.save(_trained_unet(phantom_demo).state_dict(), folder / "models" / "model.pt")
    _write_config(folder, {"network_def": NET, "preprocessing": {"_target_": "Compose", "transforms": PRE}})
    (folder / "configs" / "metadata.json").write_text(json.dumps(
        {"network_data_format": {"outputs": {"pred": {"channel_def": {str(i): n for i, n in enumerate(LABELS)}}}}}))
    return folder


def _write_config(folder, config):
    (folder / "configs" / "inference.json").write_text(json.dumps(
        {"image_key": "image", "inferer": {"_target_": "SimpleInferer"},
         "postprocessing": {"_target_": "Compose", "transforms": [
             {"_target_": "Activationsd", "keys": "pred", "softmax": True},
             {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]}, **config}))


def test_a_monai_bundle_imports_with_its_own_inference_reproduced(monai_bundle, phantom_demo, tmp_path):
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.importers import import_model

    path, record = import_model(monai_bundle, tmp_path / "m.ckpt", data=phantom_demo, parity_cases=6)
    assert record["importer"] == "monai" and record["network"] == "UNet"
    assert set(record["files"]) == {"configs/inference.json", "models/model.pt"}
    assert record["parity"]["cases"] == 6 and record["parity"]["pixel_agreement"]["mean"] >= 0.99
    model, spec = load_checkpoint(path)  # rebuilt from the checkpoint alone: the monai: family, the adapter
    assert spec.arch == "monai:UNet" and spec.label_names == LABELS and spec.preprocessing.size == (48, 48)
    assert spec.preprocessing.normalization == "ct_window" and spec.arch_kwargs["reverse_axes"] is True
    assert spec.training["imported"]["parity"] == record["parity"]


def test_a_wrong_mapping_is_caught_by_the_check_against_monai(monai_bundle, phantom_demo, tmp_path, monkeypatch):
    """Feed the network the PNG as numpy indexes it (not transposed as MONAI's reader does): the check refuses."""
    from edgeseg.importers import import_model, monai_transforms

    real = monai_transforms.map_preprocessing

    def forgetting_the_axes(*args):
        mapping = real(*args)
        mapping.reverse_axes = False
        return mapping

    monkeypatch.setattr("edgeseg.importers.monai.map_preprocessing", forgetting_the_axes)
    with pytest.raises(EdgesegError, match="does not reproduce monai's own inference: pixel agreement"):
        import_model(monai_bundle, tmp_path / "m.ckpt", data=phantom_demo, parity_cases=6)
    assert not (tmp_path / "m.ckpt").exists()


@pytest.mark.parametrize("change, message", [
    (lambda c: c["network_def"].update(channels="$[8, 16, 32]"), "Python expression or macro"),
    (lambda c: c["preprocessing"]["transforms"].append({"_target_": "CropForegroundd", "keys": "image"}),
     "CropForegroundd has no edgeseg mapping"),
    (lambda c: c["preprocessing"]["transforms"][2].update(mode="area"), "Resize\\(mode='area'\\) is not mapped"),
    (lambda c: c["network_def"].update(_target_="os.system"), "not a MONAI segmentation network"),
    (lambda c: c.update(network_def="@missing"), "reference @missing names nothing"),
    (lambda c: c["preprocessing"]["transforms"][0].update(reader="os.path.join"), r"LoadImage\(reader=…\) is not mapped"),
    (lambda c: c["preprocessing"]["transforms"][2].update(size_mode="longest"), r"Resize\(size_mode=…\) is not mapped"),
    (lambda c: c["preprocessing"]["transforms"][3].update(dtype="os.system"), r"dtype='os.system'\) is not mapped"),
])
def test_what_a_monai_config_cannot_map_is_refused_in_one_line(monai_bundle, tmp_path, change, message):
    import shutil

    from edgeseg.importers import import_model

    folder = tmp_path / "b"
    shutil.copytree(monai_bundle, folder)
    config = json.loads((folder / "configs" / "inference.json").read_text())
    change(config)
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(EdgesegError, match=message) as err:
        import_model(folder, tmp_path / "m.ckpt")
    assert "\n" not in str(err.value)


def test_a_pickle_that_would_run_code_is_refused_in_a_monai_bundle(monai_bundle, tmp_path):
    import shutil

    from edgeseg.importers import import_model

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    folder = tmp_path / "b"
    shutil.copytree(monai_bundle, folder)
    (folder / "models" / "model.pt").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(EdgesegError, match="refused: this pickle would execute code"):
        import_model(folder, tmp_path / "m.ckpt")
    assert not (tmp_path / "pwned").exists()


def _smp_by_hand(net, gray):
    """What an smp user feeds ``net``: the gray image repeated to RGB, /255, torchvision's ImageNet mean/std."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return net.eval()((gray.repeat(1, 3, 1, 1) / 255 - mean) / std)


def test_an_smp_folder_imports_gray_images_into_an_rgb_encoder(phantom_demo, tmp_path):
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.importers import import_model

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3, encoder_depth=3,
                   decoder_channels=(32, 16, 8))
    net.save_pretrained(str(tmp_path / "smp"))
    path, record = import_model(tmp_path / "smp", tmp_path / "s.ckpt", data=phantom_demo, size=(64, 64),
                                parity_cases=4)
    assert record["importer"] == "smp" and record["network"] == "Unet"
    assert record["parity"]["pixel_agreement"]["mean"] >= 0.99, record["parity"]
    model, spec = load_checkpoint(path)
    assert spec.arch_kwargs["input_repeat"] == 3 and len(spec.arch_kwargs["input_mean"]) == 3
    assert spec.preprocessing.normalization == "none"
    x = torch.rand(1, 1, 64, 64) * 255
    assert torch.allclose(model(x), _smp_by_hand(net, x), atol=1e-4)


def test_an_smp_state_dict_gets_its_encoder_statistics_in_the_graph(phantom_demo, tmp_path):
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.importers import import_model

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3, encoder_depth=3,
                   decoder_channels=(32, 16, 8))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    path, record = import_model(tmp_path / "w.pth", tmp_path / "s.ckpt", data=phantom_demo, arch="smp:Unet",
                                arch_kwargs={"encoder_name": "resnet18", "encoder_depth": 3,
                                             "decoder_channels": [32, 16, 8], "input_repeat": 3}, size=(64, 64))
    assert any("ImageNet mean/std" in note for note in record["notes"])
    model, spec = load_checkpoint(path)
    assert spec.preprocessing.normalization == "none"
    x = torch.rand(1, 1, 64, 64) * 255
    assert torch.allclose(model(x), _smp_by_hand(net, x), atol=1e-4)


def test_a_state_dict_with_a_monai_arch_compresses_and_benches(phantom_demo, tmp_path):
    """The whole path: a MONAI network by name → checkpoint → INT8 bundle whose PyTorch reference is rebuilt from
    the family name (bench) and whose ONNX Runtime artifact runs without MONAI."""
    import edgeseg
    from edgeseg.importers import import_model

    torch.manual_seed(0)
    net = monai.networks.nets.UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(8, 16), strides=(2,))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    ckpt, record = import_model(tmp_path / "w.pth", tmp_path / "u.ckpt", data=phantom_demo, arch="monai:UNet",
                                arch_kwargs={"channels": [8, 16], "strides": [2]}, size=(64, 64))
    assert record["parity"]["skipped"].startswith("the framework has no inference pipeline")
    bundle = edgeseg.compress(ckpt, calibration=phantom_demo, targets="onnxruntime", eval_data=phantom_demo,
                              out=tmp_path / "b", calib_size=8, eval_cases=2, latency_repeats=3, threads=1)
    int8 = next(a for a in bundle.manifest["artifacts"] if a["precision"] == "int8")
    assert int8["accuracy"]["cases"] == 2 and bundle.verify() == []
    assert bundle.manifest["imported"]["network"] == "monai:UNet"
    mask = bundle.predictor(backend="onnxruntime").predict(np.zeros((64, 64), np.uint8) + 40)
    assert mask.shape == (64, 64)


def test_a_swinunetr_whose_constructor_computes_imports_and_loads(phantom_demo, tmp_path):
    """MONAI's SwinUNETR computes with tensors while it is built (``.item()``, which torch's meta device cannot):
    its checkpoint still loads (the shape check builds it on the CPU) and gives the network's own logits."""
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.importers import import_model

    torch.manual_seed(0)
    kwargs = {"spatial_dims": 2, "feature_size": 12, "depths": [1, 1, 1, 1]}
    net = monai.networks.nets.SwinUNETR(in_channels=1, out_channels=3, **kwargs).eval()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    ckpt, _ = import_model(tmp_path / "w.pth", tmp_path / "s.ckpt", data=phantom_demo, arch="monai:SwinUNETR",
                           arch_kwargs=kwargs, size=(64, 64))
    model = load_checkpoint(ckpt)[0]
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5)


def test_the_import_command_reports_its_check_and_refuses_a_non_model(monai_bundle, phantom_demo, tmp_path):
    from edgeseg.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["import", str(monai_bundle), "--out", str(tmp_path / "m.ckpt"), "--data",
                             str(phantom_demo), "--parity-cases", "4"])
    assert ok.exit_code == 0, ok.output
    assert "against monai's own inference on 4 cases: pixel agreement" in ok.output
    listed = runner.invoke(app, ["import", str(monai_bundle), "--out", str(tmp_path / "m.ckpt"), "--data",
                                 str(phantom_demo), "--parity-cases", "2", "--force", "--json"])
    record = json.loads(listed.stdout)
    assert record["checkpoint"] == str(tmp_path / "m.ckpt") and record["parity"]["cases"] == 2
    (tmp_path / "empty").mkdir()
    bad = runner.invoke(app, ["import", str(tmp_path / "empty"), "--out", str(tmp_path / "x.ckpt")])
    assert bad.exit_code == 2 and "not a model edgeseg can import" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


FOREIGN = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks" / "foreign"


@pytest.mark.slow
@pytest.mark.parametrize("folder, options, dice", [
    ("monai_chest_bundle", {}, 0.9544),            # MONAI's own pipeline: 0.9544 (benchmarks/foreign/README.md)
    ("smp_chest", {"size": (128, 128)}, 0.9535),   # smp's own pipeline: 0.9535
    ("monai_chest_swinunetr_bundle", {}, 0.9561),  # MONAI's own pipeline: 0.9561 (the CNN + Transformer hybrid)
])
def test_committed_foreign_models_keep_their_own_dice_on_real_chest_xrays(shared_data, tmp_path, folder, options,
                                                                         dice):
    """Models trained by MONAI's and smp's own loops (not edgeseg) on the chest X-ray train split: imported,
    they reproduce their framework's masks and its validation Dice."""
    import edgeseg
    from edgeseg.importers import import_model

    chest = shared_data / "Dataset002_ChestXrayLungs"
    path, record = import_model(FOREIGN / folder, tmp_path / "m.ckpt", data=chest, parity_cases=8, **options)
    assert record["parity"]["pixel_agreement"]["min"] >= 0.999, record["parity"]
    scores = edgeseg.evaluate(path, chest, split="val")
    assert len(scores.result["cases"]) == 65 and abs(scores.dice["lung"] - dice) < 0.003, scores.dice
