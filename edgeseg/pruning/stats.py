"""Per-channel input means on calibration batches, and folding removed channels' means into biases.

Removing input channel ``c`` of a layer with weight ``W`` takes ``W[:, c] · a_c`` out of its output. The
mean part of that is known from calibration data and is put back through the layer's bias, so only the
channel's fluctuation is lost. Layers without a bias are followed by a BatchNorm, whose statistics
:func:`edgeseg.pruning.recalibrate_batchnorm` re-estimates (a mean correction alone does not rescue them:
the variance reaching each BatchNorm drops too, and that is what breaks the pruned model).
"""
from __future__ import annotations

import torch
from torch import nn

from edgeseg.pruning.graph import PRUNABLE
from edgeseg.pruning.recovery import evaluation_mode, forward_all


class ActivationStats:
    """Mean of every input channel of every conv/linear layer, from forward pre-hooks."""

    def __init__(self):
        self.mean: dict[nn.Module, torch.Tensor] = {}

    @classmethod
    @torch.no_grad()
    def collect(cls, model: nn.Module, batches) -> "ActivationStats":
        sums: dict[nn.Module, list] = {}

        def hook(module, inputs):
            x = inputs[0].detach().float().movedim(-1 if isinstance(module, nn.Linear) else 1, 0).flatten(1)
            acc = sums.setdefault(module, [0.0, 0])
            acc[0] = acc[0] + x.sum(1)
            acc[1] += x.shape[1]

        handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE)]
        try:
            with evaluation_mode(model):
                forward_all(model, batches)
        finally:
            for h in handles:
                h.remove()
        stats = cls()
        stats.mean = {module: s / n for module, (s, n) in sums.items()}
        return stats


def input_column_sum(module: nn.Module) -> torch.Tensor:
    """``(out, in)``: what each output receives per unit of a constant input channel."""
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        return w
    if getattr(module, "transposed", False):  # (in, out, *k): one output pixel sees prod(stride)/prod(k) taps
        taps = torch.tensor(module.kernel_size).prod() / torch.tensor(module.stride).prod()
        return w.flatten(2).sum(2).t() / taps.clamp_min(1)
    return w.flatten(2).sum(2)


@torch.no_grad()
def compensate_bias(layer: nn.Module, idxs: list[int], stats: ActivationStats) -> None:
    """Fold the mean of input channels ``idxs`` (about to be removed) into ``layer.bias``, if it has one."""
    if layer not in stats.mean or not idxs:
        return
    if getattr(layer, "bias", None) is not None:
        mean = stats.mean[layer][idxs].to(layer.weight.device, layer.weight.dtype)
        layer.bias += input_column_sum(layer)[:, idxs] @ mean
    keep = torch.ones(len(stats.mean[layer]), dtype=torch.bool, device=stats.mean[layer].device)
    keep[idxs] = False
    stats.mean[layer] = stats.mean[layer][keep]  # stay aligned with the shrunk layer (concat inputs come twice)
