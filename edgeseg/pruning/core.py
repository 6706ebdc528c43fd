"""Structured channel pruning of edgeseg models by width ratio or MAC target."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.pruning.attention import heads_to_keep, prune_heads
from edgeseg.pruning.graph import PRUNABLE, attention_modules, build_graph, prunable_groups
from edgeseg.pruning.recovery import recalibrate_batchnorm
from edgeseg.pruning.stats import ActivationStats, compensate_bias

IMPORTANCES = ("bn_scale", "magnitude", "random")


@dataclass
class PruneReport:
    """What :func:`prune_model` did: the width ratio used, MACs/params before and after, per-layer widths."""

    ratio: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    importance: str
    target_macs: int | None = None
    round_to: int | None = None
    recalibrated_bn: bool = False
    widths: dict[str, list[int]] = field(default_factory=dict)  # layer → [before, after] (output width or heads)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def count_macs(model: nn.Module, example_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(MACs, parameters)`` of one forward pass on a ``example_shape`` input (torch-pruning's counter:
    conv/linear/norm layers; attention matmuls and resampling are not counted)."""
    device = next(model.parameters()).device
    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(example_shape, device=device))
    return int(macs), sum(p.numel() for p in model.parameters())


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every conv/linear layer and the head count of every attention module."""
    widths, attentions = {}, set(attention_modules(model))
    for name, m in model.named_modules():
        if isinstance(m, PRUNABLE):
            widths[name] = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        elif m in attentions:
            widths[f"{name}.num_heads"] = m.num_heads
    return widths


def channels_to_keep(channels: int, ratio: float, round_to: int | None = None) -> int:
    """``channels`` less ``ratio`` of them, to the nearest multiple of ``round_to`` (never below it, never 0)."""
    keep = max(1, channels - round(channels * ratio))
    if round_to and channels >= round_to:
        keep = max(round_to, round(keep / round_to) * round_to)
    return min(keep, channels)


class BNScaleOrMagnitude(tp.importance.Importance):
    """|BatchNorm scale| (network slimming) where the group has a BatchNorm, else the group L2 magnitude."""

    def __init__(self):
        self.bn, self.magnitude = tp.importance.BNScaleImportance(), tp.importance.GroupMagnitudeImportance(p=2)

    def __call__(self, group):
        scores = self.bn(group)
        return self.magnitude(group) if scores is None else scores


def make_importance(kind: str) -> tp.importance.Importance:
    return {"bn_scale": BNScaleOrMagnitude, "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "random": tp.importance.RandomImportance}[kind]()


@torch.no_grad()
def _prune_width(model: nn.Module, example: torch.Tensor, ratio: float, importance: str,
                 stats: ActivationStats | None, round_to: int | None, attention: bool) -> None:
    """Remove ``ratio`` of the channels of every prunable group (and of the heads of every attention)."""
    with torch.enable_grad():
        graph = build_graph(model, example)
    scorer = make_importance(importance)
    plans = []
    for root, channels in prunable_groups(graph, model, example):
        n_prune = channels - channels_to_keep(channels, ratio, round_to)
        if n_prune <= 0:
            continue
        fn = graph.get_pruner_of_module(root).prune_out_channels
        full = graph.get_pruning_group(root, fn, list(range(channels)))
        scores = scorer(full)
        plans.append((root, fn, sorted(torch.argsort(scores.cpu())[:n_prune].tolist())))
    for root, fn, idxs in plans:  # groups are rebuilt one by one: concat offsets follow earlier pruning
        group = graph.get_pruning_group(root, fn, idxs)
        if not graph.check_pruning_group(group):
            continue
        if stats is not None:
            for item in group:
                if item.dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                    compensate_bias(item.dep.target.module, item.idxs, stats)
        group.prune()
    if attention:
        for attn in attention_modules(model):
            prune_heads(attn, heads_to_keep(attn.num_heads, ratio), stats)


@torch.no_grad()
def _check_prunable(model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None,
                    attention: bool) -> None:
    """Prune a copy first: a network whose structure torch-pruning's dependency graph does not follow (it breaks,
    or the pruned copy no longer runs or changes its output) is refused in one line, the model left untouched."""
    trial = copy.deepcopy(model)
    name = type(getattr(model, "net", model)).__name__
    try:
        _prune_width(trial, example, ratio, "magnitude", None, round_to, attention)
        shapes = tuple(trial(example).shape), tuple(model(example).shape)
    except Exception as exc:  # torch-pruning's or the network's own error: the finding, in one line
        first = (str(exc).strip().splitlines() or [""])[0][:140]
        raise EdgesegError(f"{name} cannot be pruned structurally: torch-pruning's dependency graph does not follow "
                           f"this network ({type(exc).__name__}: {first}); compress it without --prune") from None
    if shapes[0] != shapes[1]:
        raise EdgesegError(f"{name} cannot be pruned structurally: the pruned copy outputs {shapes[0]}, not "
                           f"{shapes[1]}; compress it without --prune")


def _ratio_for_macs(model: nn.Module, example: torch.Tensor, target: int, round_to: int | None,
                    attention: bool, max_ratio: float, steps: int = 12) -> float:
    """Bisect the width ratio whose pruned copy has MACs closest to ``target`` from below."""
    lo, hi = 0.0, max_ratio
    shape = tuple(example.shape)
    for _ in range(steps):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _prune_width(trial, example, mid, "magnitude", None, round_to, attention)
        if count_macs(trial, shape)[0] > target:
            lo = mid
        else:
            hi = mid
    return hi


def prune_model(model: nn.Module, example_shape: tuple[int, ...], ratio: float | None = None,
                target_macs: float | None = None, calib_batches=None, importance: str = "bn_scale",
                round_to: int | None = None, prune_attention: bool = True, recalibrate: bool = True,
                max_ratio: float = 0.9) -> PruneReport:
    """Prune ``model`` in place, structurally: channels and attention heads are really removed.

    ``ratio``: fraction of the channels removed from every prunable group (conv blocks, attention gates,
    up-sampling, transformer embedding and MLP width, attention heads); the class head's outputs and the
    model's input channels are never touched. ``target_macs``: instead, the MACs to reach on an
    ``example_shape`` input (a value <= 1 is a fraction of the current MACs); the ratio is then bisected.
    ``importance``: ``"bn_scale"`` (|BatchNorm γ|, group magnitude where there is no BatchNorm),
    ``"magnitude"`` (torch-pruning's group L2 magnitude) or ``"random"``. ``calib_batches``: a few input
    batches ``(B, C, *spatial)`` of training images; with them the removed channels' means are folded into
    the next biases and every BatchNorm's statistics are re-estimated (``recalibrate``). Without them the
    pruned model is usually broken (Dice near 0) until :func:`recalibrate_batchnorm` or a fine-tune.
    """
    start = time.perf_counter()
    if (ratio is None) == (target_macs is None):
        raise EdgesegError("prune_model: give exactly one of ratio and target_macs")
    if importance not in IMPORTANCES:
        raise EdgesegError(f"prune_model: importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}")
    if ratio is not None and not 0 <= ratio <= max_ratio:
        raise EdgesegError(f"prune_model: ratio must be in [0, {max_ratio}], got {ratio}")
    calib = list(calib_batches) if calib_batches is not None else []
    was_training = model.training
    model.eval()
    example = torch.randn(example_shape, device=next(model.parameters()).device)
    macs0, params0 = count_macs(model, example_shape)
    _check_prunable(model, example, ratio if ratio is not None else max_ratio / 2, round_to, prune_attention)
    target = None
    if target_macs is not None:
        target = int(target_macs * macs0) if target_macs <= 1 else int(target_macs)
        ratio = _ratio_for_macs(model, example, target, round_to, prune_attention, max_ratio)
    before = layer_widths(model)
    stats = ActivationStats.collect(model, calib) if calib else None
    _prune_width(model, example, ratio, importance, stats, round_to, prune_attention)
    if calib and recalibrate:
        recalibrate_batchnorm(model, calib)
    model.train(was_training)
    macs1, params1 = count_macs(model, example_shape)
    after = layer_widths(model)
    return PruneReport(ratio=round(ratio, 4), macs_before=macs0, macs_after=macs1, params_before=params0,
                       params_after=params1, importance=importance, target_macs=target, round_to=round_to,
                       recalibrated_bn=bool(calib and recalibrate),
                       widths={k: [before[k], after[k]] for k in before},
                       seconds=round(time.perf_counter() - start, 2))
