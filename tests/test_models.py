import numpy as np
import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.models import create_model, list_models
from edgeseg.onnx_export import export_onnx, onnx_parity

SMALL = {
    "unet": dict(base=4, depth=3),
    "attention_unet": dict(base=4, depth=3),
    "hybrid": dict(base=4, depth=3, embed_dim=16, num_heads=2, num_layers=1, img_size=32),
    "unet3d": dict(base=4, depth=2),
}


def test_registry_lists_every_architecture():
    assert set(SMALL) <= set(list_models())


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("in_channels,num_classes", [(1, 2), (2, 5), (3, 2)])
def test_output_shape(name, in_channels, num_classes):
    model = create_model(name, in_channels, num_classes, **SMALL[name]).eval()
    spatial = (16, 32, 32) if name.endswith("3d") else (32, 48)
    with torch.no_grad():
        y = model(torch.randn(2, in_channels, *spatial))
    assert y.shape == (2, num_classes, *spatial)


def test_hybrid_positional_embedding_adapts_to_input_size():
    model = create_model("hybrid", 1, 2, **SMALL["hybrid"]).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 96)).shape == (1, 2, 64, 96)


def test_hybrid_cross_attention_fusion_has_one_stem_per_modality():
    model = create_model("hybrid", 2, 5, fusion="cross_attention", **SMALL["hybrid"]).eval()
    assert len(model.encoders) == 2
    with torch.no_grad():
        assert model(torch.randn(1, 2, 32, 32)).shape == (1, 5, 32, 32)
    with pytest.raises(EdgesegError, match="at least two"):
        create_model("hybrid", 1, 2, fusion="cross_attention")


def test_attention_unet_gates_every_skip():
    model = create_model("attention_unet", 1, 2, **SMALL["attention_unet"])
    assert all(up.gate is not None for up in model.decoder.ups)
    assert all(up.gate is None for up in create_model("unet", 1, 2, **SMALL["unet"]).decoder.ups)


def test_unknown_model_and_bad_kwargs_are_clear_errors():
    with pytest.raises(EdgesegError, match="unknown model"):
        create_model("resnet", 1, 2)
    with pytest.raises(EdgesegError, match="hybrid"):
        create_model("hybrid", 1, 2, not_a_kwarg=3)


@pytest.mark.parametrize("name,extra", [("unet", {}), ("attention_unet", {}), ("hybrid", {}),
                                        ("hybrid", {"fusion": "cross_attention"}), ("unet3d", {})])
def test_onnx_export_runs_in_onnxruntime_and_matches_torch(tmp_path, name, extra):
    cin = 2 if extra else 1
    model = create_model(name, cin, 3, **SMALL[name], **extra).eval()
    spatial = (16, 32, 32) if name.endswith("3d") else (32, 32)
    path = export_onnx(model, tmp_path / "m.onnx", (2, cin, *spatial), metadata={"edgeseg.test": "1"})
    import onnx

    assert {p.key for p in onnx.load(str(path)).metadata_props} >= {"edgeseg.test"}
    # Dynamic batch and (for the 2D models) a spatial size other than the example's.
    other = (8, 48, 32) if name.endswith("3d") else (64, 48)
    x = np.random.default_rng(0).standard_normal((3, cin, *other)).astype(np.float32)
    parity = onnx_parity(model, path, x)
    assert parity["max_abs_diff"] < 1e-3
    assert parity["mask_agreement"] > 0.999
