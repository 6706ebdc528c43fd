"""Building blocks shared by every architecture, for 2D and 3D (``dims`` = 2 or 3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_nd(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def conv_transpose_nd(dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]


def norm_nd(dims: int, norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if norm == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, affine=True)
    raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")


def max_pool_nd(dims: int) -> nn.Module:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims](2)


def channel_widths(base: int, depth: int, max_width: int | None) -> list[int]:
    """Widths of the ``depth + 1`` encoder stages: base, 2*base, ... capped at ``max_width``."""
    widths = [base * 2**i for i in range(depth + 1)]
    return [min(w, max_width) for w in widths] if max_width else widths


class ConvBlock(nn.Module):
    """Two (conv 3x3 → norm → ReLU) layers."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, norm: str = "batch"):
        super().__init__()
        conv = conv_nd(dims)
        self.block = nn.Sequential(
            conv(in_ch, out_ch, 3, padding=1, bias=False), norm_nd(dims, norm, out_ch), nn.ReLU(inplace=True),
            conv(out_ch, out_ch, 3, padding=1, bias=False), norm_nd(dims, norm, out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AttentionGate(nn.Module):
    """Additive attention gate of Oktay et al. (2018): the decoder signal ``g`` weighs the skip ``x``."""

    def __init__(self, dims: int, skip_ch: int, gate_ch: int, inter_ch: int, norm: str = "batch"):
        super().__init__()
        conv = conv_nd(dims)
        self.theta_x = conv(skip_ch, inter_ch, 1, bias=False)
        self.phi_g = conv(gate_ch, inter_ch, 1, bias=True)
        self.psi = nn.Sequential(conv(inter_ch, 1, 1, bias=True), nn.Sigmoid())
        self.out = nn.Sequential(conv(skip_ch, skip_ch, 1, bias=False), norm_nd(dims, norm, skip_ch))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(F.relu(self.theta_x(x) + self.phi_g(g)))
        return self.out(x * alpha)


class UpBlock(nn.Module):
    """Upsample ×2, optionally gate the skip, concatenate, ConvBlock."""

    def __init__(self, dims: int, in_ch: int, skip_ch: int, out_ch: int, *, attention: bool,
                 upsample: str = "transpose", norm: str = "batch"):
        super().__init__()
        if upsample == "transpose":
            self.up = conv_transpose_nd(dims)(in_ch, out_ch, 2, stride=2)
        elif upsample == "interpolate":
            mode = "bilinear" if dims == 2 else "trilinear"
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
                                    conv_nd(dims)(in_ch, out_ch, 1))
        else:
            raise ValueError(f"upsample must be 'transpose' or 'interpolate', got {upsample!r}")
        self.gate = AttentionGate(dims, skip_ch, out_ch, max(skip_ch // 2, 4), norm) if attention else None
        self.conv = ConvBlock(dims, out_ch + skip_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.conv(torch.cat([x, skip], dim=1))


class Encoder(nn.Module):
    """CNN encoder: ``len(widths)`` stages, each after the first starting with a 2× max-pool."""

    def __init__(self, dims: int, in_ch: int, widths: list[int], norm: str = "batch"):
        super().__init__()
        chans = [in_ch, *widths]
        self.stages = nn.ModuleList(
            nn.Sequential(*([max_pool_nd(dims)] if i else []), ConvBlock(dims, chans[i], chans[i + 1], norm))
            for i in range(len(widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: one :class:`UpBlock` per skip, then a 1×1 head to class logits."""

    def __init__(self, dims: int, widths: list[int], num_classes: int, *, attention: bool,
                 upsample: str = "transpose", norm: str = "batch"):
        super().__init__()
        self.ups = nn.ModuleList(
            UpBlock(dims, widths[i + 1], widths[i], widths[i], attention=attention, upsample=upsample, norm=norm)
            for i in reversed(range(len(widths) - 1))
        )
        self.head = conv_nd(dims)(widths[0], num_classes, 1)

    def forward(self, bottom: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = bottom
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return self.head(x)
