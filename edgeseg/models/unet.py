"""U-Net, Attention U-Net (Oktay et al.) and 3D U-Net: one implementation, three registrations."""
from __future__ import annotations

import torch
from torch import nn

from edgeseg.models.blocks import Decoder, Encoder, channel_widths
from edgeseg.models.registry import register_model


class UNet(nn.Module):
    """Encoder–decoder with (optionally attention-gated) skips; input sides must divide by ``2**depth``."""

    def __init__(self, in_channels: int, num_classes: int, *, dims: int = 2, base: int = 16, depth: int = 4,
                 max_width: int | None = None, attention: bool = False, upsample: str = "transpose",
                 norm: str = "batch"):
        super().__init__()
        self.dims, self.depth = dims, depth
        widths = channel_widths(base, depth, max_width)
        self.encoder = Encoder(dims, in_channels, widths, norm)
        self.decoder = Decoder(dims, widths, num_classes, attention=attention, upsample=upsample, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return self.decoder(features[-1], features[:-1])


@register_model("unet", "2D U-Net (Ronneberger et al.), concat skips")
def unet(in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    return UNet(in_channels, num_classes, dims=2, **kwargs)


@register_model("attention_unet", "2D Attention U-Net: additive attention gates on every skip (Oktay et al.)")
def attention_unet(in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    return UNet(in_channels, num_classes, dims=2, attention=True, **kwargs)


@register_model("unet3d", "3D U-Net for volumes (Çiçek et al.), optional attention gates")
def unet3d(in_channels: int, num_classes: int, base: int = 8, depth: int = 3, **kwargs) -> nn.Module:
    return UNet(in_channels, num_classes, dims=3, base=base, depth=depth, **kwargs)
