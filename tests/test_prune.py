import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgeseg.checkpoint import CheckpointSpec, load_checkpoint, save_checkpoint
from edgeseg.data import PreprocessSpec
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import evaluate_checkpoint
from edgeseg.models import create_model
from edgeseg.models.hybrid import MultiHeadAttention
from edgeseg.onnx_export import export_onnx, onnx_parity
from edgeseg.pruning import calibration_batches, count_macs, finetune, prune_model, recalibrate_batchnorm
from edgeseg.pruning.attention import prune_heads
from edgeseg.pruning.core import channels_to_keep
from edgeseg.pruning.graph import attention_modules, build_graph, prunable_groups

SMALL = {
    "unet": dict(base=8, depth=3),
    "attention_unet": dict(base=8, depth=3),
    "unet3d": dict(base=8, depth=2),
    "hybrid": dict(base=8, depth=3, embed_dim=32, num_heads=4, num_layers=1, img_size=32),
}
CASES = [("unet", 1, {}), ("attention_unet", 1, {}), ("unet3d", 1, {}), ("hybrid", 1, {}),
         ("hybrid", 3, {"fusion": "cross_attention"})]


def _model(name, in_ch=1, classes=3, **extra):
    torch.manual_seed(0)
    model = create_model(name, in_ch, classes, **SMALL[name], **extra).eval()
    for m in model.modules():  # trained-looking BatchNorms, so that wrong channel mappings show
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def _shape(name, in_ch, batch=2):
    return (batch, in_ch, *((16, 16, 16) if name == "unet3d" else (32, 32)))


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


@pytest.mark.parametrize("name,in_ch,extra", CASES)
def test_pruned_model_runs_exports_and_keeps_input_and_head(name, in_ch, extra, tmp_path):
    model = _model(name, in_ch, **extra)
    shape = _shape(name, in_ch)
    x = torch.randn(*shape)
    report = prune_model(model, shape, ratio=0.5, calib_batches=[x])
    assert report.macs_after < 0.4 * report.macs_before and report.params_after < report.params_before
    assert _first_conv(model).in_channels == (1 if extra else in_ch)
    assert model.decoder.head.out_channels == 3
    with torch.no_grad():
        assert model(torch.randn(1, *shape[1:])).shape == (1, 3, *shape[2:])
    path = export_onnx(model, tmp_path / "p.onnx", shape)
    parity = onnx_parity(model, path, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    assert parity["max_abs_diff"] < 1e-3 and parity["mask_agreement"] > 0.999


def _silence_channels(model, shape, ratio, seed=1):
    """Zero every weight of the channels a ``ratio`` pruning will remove: they then carry nothing, their
    BatchNorm scale and group magnitude are 0, and removing them must not change the output at all."""
    graph = build_graph(model, torch.randn(*shape))
    gen = torch.Generator().manual_seed(seed)
    plans = [(root, torch.randperm(ch, generator=gen)[: ch - channels_to_keep(ch, ratio)].tolist())
             for root, ch in prunable_groups(graph, model)]
    with torch.no_grad():
        for root, idxs in plans:
            for item in graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, idxs):
                m, i = item.dep.target.module, item.idxs
                if not isinstance(m, nn.Module) or getattr(m, "weight", None) is None:
                    continue
                out = graph.is_out_channel_pruning_fn(item.dep.handler)
                if isinstance(m, nn.modules.batchnorm._BatchNorm) or out != getattr(m, "transposed", False):
                    m.weight[i] = 0  # BN scale, conv/linear output rows, transposed-conv input rows
                else:
                    m.weight[:, i] = 0
                if out and m.bias is not None:
                    m.bias[i] = 0


@pytest.mark.parametrize("name,extra", [("unet", {}), ("attention_unet", {}), ("unet3d", {}),
                                        ("attention_unet", {"norm": "instance", "upsample": "interpolate"})])
@pytest.mark.parametrize("importance", ["bn_scale", "magnitude"])
def test_pruning_keeps_the_function_through_concat_skips_and_gates(name, extra, importance):
    """Not just shapes: with the to-be-pruned channels silenced, the pruned model computes the same logits,
    so every concat offset and gated skip was mapped to the right input channels of the next conv."""
    model = _model(name, **extra)
    shape = _shape(name, 1, batch=4)
    _silence_channels(model, shape, 0.5)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x)
    report = prune_model(model, shape, ratio=0.5, importance=importance, calib_batches=[x], recalibrate=False)
    assert report.macs_after < 0.3 * report.macs_before
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_gated_skips_are_pruned_too():
    model = _model("attention_unet")
    widths = prune_model(model, _shape("attention_unet", 1), ratio=0.5).widths
    skips = [k for k in widths if k.startswith("encoder.stages") and k.endswith("block.3")]
    assert skips and all(widths[k][1] == widths[k][0] // 2 for k in skips)  # encoder outputs feeding skips


def test_ratio_and_mac_target_are_honoured():
    shape = _shape("hybrid", 1)
    model = _model("hybrid")
    report = prune_model(model, shape, ratio=0.5)
    convs = {k: v for k, v in report.widths.items() if "stages" in k or ("ups" in k and "psi" not in k)}
    assert all(after == channels_to_keep(before, 0.5) for before, after in convs.values())
    assert 0.2 < report.macs_after / report.macs_before < 0.35
    for target in (0.5, 0.7):
        model = _model("hybrid")
        report = prune_model(model, shape, target_macs=target)
        assert report.macs_after == count_macs(model, shape)[0]
        assert target - 0.08 <= report.macs_after / report.macs_before <= target + 0.01
    absolute = prune_model(_model("unet"), _shape("unet", 1), target_macs=1_000_000)
    assert 0.85e6 <= absolute.macs_after <= 1.01e6


def test_round_to_never_halves_a_small_layer_at_a_mild_ratio():
    assert channels_to_keep(16, 0.1, round_to=8) == 16  # torch-pruning's own round_to floors this to 8
    assert channels_to_keep(64, 0.5, round_to=8) == 32
    assert channels_to_keep(4, 0.5, round_to=8) == 2  # layers narrower than round_to are left to the ratio
    assert channels_to_keep(3, 0.9) == 1


@pytest.mark.parametrize("extra", [{}, {"fusion": "cross_attention"}])
def test_hybrid_heads_and_positional_embedding_stay_consistent(extra):
    in_ch = 2 if extra else 1
    model = _model("hybrid", in_ch, **extra)
    prune_model(model, _shape("hybrid", in_ch), ratio=0.5)
    dim = model.to_tokens.out_channels
    assert dim == 16 and model.pos_embed.shape == (1, dim, 4, 4)
    assert all(ln.normalized_shape == (dim,) for ln in model.modules() if isinstance(ln, nn.LayerNorm))
    assert model.from_tokens[0].in_channels == dim
    for attn in attention_modules(model):
        inner = attn.num_heads * attn.head_dim
        assert attn.num_heads == 2 and attn.head_dim == 8  # whole heads removed, head_dim (and scale) kept
        assert (attn.q.in_features, attn.kv.in_features, attn.proj.out_features) == (dim, dim, dim)
        assert (attn.q.out_features, attn.kv.out_features, attn.proj.in_features) == (inner, 2 * inner, inner)
    for block in model.blocks:
        assert block.mlp[0].in_features == dim and block.mlp[0].out_features == block.mlp[2].in_features == 32


def test_whole_head_pruning_is_exact_for_silent_heads():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).eval()
    with torch.no_grad():
        for h in (1, 3):  # heads 1 and 3 contribute nothing
            cols = slice(4 * h, 4 * h + 4)
            attn.q.weight[cols] = 0
            attn.kv.weight[cols], attn.kv.weight[16:][cols] = 0, 0
            attn.proj.weight[:, cols] = 0
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected = attn(x)
        assert prune_heads(attn, keep=2) == [1, 3]
        assert torch.allclose(attn(x), expected, atol=1e-6)
    assert (attn.num_heads, attn.head_dim, attn.q.out_features, attn.kv.out_features) == (2, 4, 8, 16)


def test_bad_arguments_are_clear_errors():
    model, shape = _model("unet"), _shape("unet", 1)
    with pytest.raises(EdgesegError, match="exactly one"):
        prune_model(model, shape, ratio=0.5, target_macs=0.5)
    with pytest.raises(EdgesegError, match="importance"):
        prune_model(model, shape, ratio=0.5, importance="taylor")
    with pytest.raises(EdgesegError, match="ratio"):
        prune_model(model, shape, ratio=0.95)


@pytest.mark.parametrize("name,in_ch,extra", [("hybrid", 1, {}), ("hybrid", 2, {"fusion": "cross_attention"}),
                                              ("unet3d", 1, {})])
def test_pruned_checkpoint_round_trip_gives_identical_outputs(name, in_ch, extra, tmp_path):
    dims = 3 if name == "unet3d" else 2
    spec = CheckpointSpec(arch=name, arch_kwargs={**SMALL[name], **extra}, in_channels=in_ch, num_classes=3,
                          label_names=["bg", "a", "b"], spatial_dims=dims,
                          preprocessing=PreprocessSpec((16,) * dims, [f"c{i}" for i in range(in_ch)]))
    model = spec.build_model().eval()
    _, plain_spec = load_checkpoint(save_checkpoint(tmp_path / "plain.ckpt", model, spec))
    assert "structure" not in plain_spec.pruning  # unpruned checkpoints carry no structure
    shape = _shape(name, in_ch)
    report = prune_model(model, shape, ratio=0.4, calib_batches=[torch.randn(*shape)])
    spec.pruning = {"report": report.to_dict()}
    loaded, spec2 = load_checkpoint(save_checkpoint(tmp_path / "p.ckpt", model, spec))
    assert spec2.pruning["report"]["ratio"] == 0.4 and spec2.pruning["structure"]["modules"]
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert count_macs(loaded, shape) == count_macs(model, shape)


@pytest.fixture(scope="module")
def phantom_model():
    from importlib.resources import files

    return load_checkpoint(files("edgeseg") / "resources" / "phantom_hybrid.ckpt")


def test_dice_after_pruning_bn_recalibration_and_recovery_finetune(phantom_model, phantom2d):
    """The trial's failure and its cure on phantom data: magnitude pruning without calibration data
    collapses, BatchNorm recalibration restores most of it, a short fine-tune improves it further."""
    model, spec = copy.deepcopy(phantom_model[0]), phantom_model[1]

    def dice(m):
        return np.mean([v["dice"] for v in evaluate_checkpoint(m, spec, phantom2d)["mean"].values()])

    before = dice(model)
    prune_model(model, (1, 1, 128, 128), ratio=0.5, importance="magnitude")
    pruned = dice(model)
    recalibrate_batchnorm(model, calibration_batches(spec, phantom2d, num_images=8))
    recalibrated = dice(model)
    result = finetune(model, spec, phantom2d, epochs=6, max_steps=6)
    recovered = dice(model)
    assert pruned < before - 0.3 and recalibrated > pruned + 0.2
    assert result["dice_after"] > result["dice_before"] and recovered > recalibrated
    assert len(result["history"]) == 6 and result["steps"] == 6


@pytest.mark.slow
def test_bundled_pruned_chest_checkpoint_keeps_its_dice(shared_data):
    from pathlib import Path

    ckpt = Path(__file__).parents[1] / "benchmarks" / "checkpoints" / "chest_xray_hybrid_p50.ckpt"
    model, spec = load_checkpoint(ckpt)
    assert ckpt.stat().st_size <= 10_000_000 and spec.pruning["report"]["ratio"] == 0.5
    assert count_macs(model, (1, 1, 256, 256))[0] == spec.pruning["report"]["macs_after"]
    dice = evaluate_checkpoint(model, spec, shared_data / "Dataset002_ChestXrayLungs")["mean"]["lung"]["dice"]
    assert dice >= 0.9659 - 0.01 and dice == pytest.approx(spec.metrics["val"]["mean"]["lung"]["dice"], abs=1e-4)


def test_a_network_torch_pruning_cannot_follow_is_refused_in_one_line_and_left_whole():
    pytest.importorskip("monai")
    from edgeseg.models import create_model

    model = create_model("monai:UNet", 1, 2, spatial_dims=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EdgesegError, match="UNet cannot be pruned structurally: .*compress it without --prune") as err:
        prune_model(model, (1, 1, 64, 64), ratio=0.4)
    assert "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
