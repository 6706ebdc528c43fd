"""A framework's network with the input conventions it was trained with, so that edgeseg feeds it what its own
pipeline fed it — inside the graph, so every exported artifact carries them too."""
from __future__ import annotations

import torch
from torch import nn

from edgeseg.errors import EdgesegError

# arch_kwargs keys the family factories take off before building the framework's network
ADAPTER_KEYS = ("input_repeat", "reverse_axes", "input_mean", "input_std")


class Adapted(nn.Module):
    """``net`` behind three optional input steps, in this order: a 1-channel image repeated to ``input_repeat``
    channels (a gray X-ray into an RGB encoder); ``(x - input_mean[c]) / input_std[c]`` per channel (an
    encoder's ImageNet statistics, a fixed intensity range); the spatial axes reversed (MONAI's PIL reader
    loads a PNG as (W, H), so a MONAI-trained 2D model saw transposed images) — and the output's axes back."""

    def __init__(self, net: nn.Module, input_repeat: int | None = None, reverse_axes: bool = False,
                 input_mean: list[float] | None = None, input_std: list[float] | None = None):
        super().__init__()
        self.net, self.input_repeat, self.reverse_axes = net, input_repeat, bool(reverse_axes)
        if (input_mean is None) != (input_std is None):
            raise EdgesegError("input_mean and input_std go together")
        self.affine = input_mean is not None
        if self.affine:
            if len(input_mean) != len(input_std) or not all(float(s) > 0 for s in input_std):
                raise EdgesegError("input_mean and input_std need one value per channel, std > 0")
            self.register_buffer("mean", torch.tensor(input_mean, dtype=torch.float32), persistent=False)
            self.register_buffer("std", torch.tensor(input_std, dtype=torch.float32), persistent=False)

    def _axes(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 1, *reversed(range(2, x.ndim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_repeat:
            x = x.repeat(1, self.input_repeat, *([1] * (x.ndim - 2)))
        if self.affine:
            shape = (1, -1, *([1] * (x.ndim - 2)))
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        if self.reverse_axes:
            return self._axes(self.net(self._axes(x)))
        return self.net(x)


def adapted(build, in_channels: int, kwargs: dict) -> nn.Module:
    """``build(net_in_channels, **framework_kwargs)`` behind the adapter keys of ``kwargs`` (none: the bare net,
    whose state dict keys are the framework's own)."""
    steps = {k: kwargs.pop(k) for k in ADAPTER_KEYS if k in kwargs}
    repeat = steps.get("input_repeat")
    if repeat is not None and in_channels != 1:
        raise EdgesegError(f"input_repeat needs 1-channel images, the spec has {in_channels}")
    net = build(repeat or in_channels, **kwargs)
    return Adapted(net, **steps) if any(v not in (None, False) for v in steps.values()) else net
