"""A framework's network with the input conventions it was trained with, so that edgeseg feeds it what its own
pipeline fed it — inside the graph, so every exported artifact carries them too."""
from __future__ import annotations

import torch
from torch import nn

from edgeseg.errors import EdgesegError

# arch_kwargs keys the family factories take off before building the framework's network
ADAPTER_KEYS = ("input_repeat", "reverse_axes", "spatial_axes", "input_mean", "input_std")


class Adapted(nn.Module):
    """``net`` behind three optional input steps, in this order: a 1-channel image repeated to ``input_repeat``
    channels (a gray X-ray into an RGB encoder); ``(x - input_mean[c]) / input_std[c]`` per channel (an
    encoder's ImageNet statistics, a fixed intensity range); the spatial axes reversed (MONAI's PIL reader
    loads a PNG as (W, H), so a MONAI-trained 2D model saw transposed images), or put in the order
    ``spatial_axes`` (nnU-Net reads a NIfTI volume as (z, y, x) and may transpose it further) — and the output's
    axes back."""

    def __init__(self, net: nn.Module, input_repeat: int | None = None, reverse_axes: bool = False,
                 input_mean: list[float] | None = None, input_std: list[float] | None = None,
                 spatial_axes: list[int] | None = None):
        super().__init__()
        self.net, self.input_repeat = net, input_repeat
        if spatial_axes is not None and (not isinstance(spatial_axes, (list, tuple))
                                         or any(type(a) is not int for a in spatial_axes)
                                         or sorted(spatial_axes) != list(range(len(spatial_axes)))):
            raise EdgesegError(f"spatial_axes {str(spatial_axes)[:60]}: a permutation of the spatial axes")
        if reverse_axes and spatial_axes is not None:
            raise EdgesegError("reverse_axes and spatial_axes: one or the other")
        self.spatial_axes = [int(a) for a in spatial_axes] if spatial_axes is not None else None
        self.reverse_axes = bool(reverse_axes)
        if (input_mean is None) != (input_std is None):
            raise EdgesegError("input_mean and input_std go together")
        self.affine = input_mean is not None
        if self.affine:
            if len(input_mean) != len(input_std) or not all(float(s) > 0 for s in input_std):
                raise EdgesegError("input_mean and input_std need one value per channel, std > 0")
            self.register_buffer("mean", torch.tensor(input_mean, dtype=torch.float32), persistent=False)
            self.register_buffer("std", torch.tensor(input_std, dtype=torch.float32), persistent=False)

    def _order(self, ndim: int) -> list[int] | None:
        if self.reverse_axes:
            return list(reversed(range(ndim - 2)))
        if self.spatial_axes is not None and len(self.spatial_axes) != ndim - 2:
            raise EdgesegError(f"spatial_axes {self.spatial_axes}: the input has {ndim - 2} spatial axes")
        return self.spatial_axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_repeat:
            x = x.repeat(1, self.input_repeat, *([1] * (x.ndim - 2)))
        if self.affine:
            shape = (1, -1, *([1] * (x.ndim - 2)))
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        order = self._order(x.ndim)
        if order is None:
            return self.net(x)
        back = [order.index(a) for a in range(len(order))]
        out = self.net(x.permute(0, 1, *[2 + a for a in order]))
        return out.permute(0, 1, *[2 + a for a in back])


def adapted(build, in_channels: int, kwargs: dict) -> nn.Module:
    """``build(net_in_channels, **framework_kwargs)`` behind the adapter keys of ``kwargs`` (none: the bare net,
    whose state dict keys are the framework's own)."""
    steps = {k: kwargs.pop(k) for k in ADAPTER_KEYS if k in kwargs}
    repeat = steps.get("input_repeat")
    if repeat is not None and in_channels != 1:
        raise EdgesegError(f"input_repeat needs 1-channel images, the spec has {in_channels}")
    net = build(repeat or in_channels, **kwargs)
    return Adapted(net, **steps) if any(v not in (None, False) for v in steps.values()) else net
