"""TransUNet-style hybrid: CNN encoder, transformer bottleneck, attention-gated CNN decoder.

Multi-modal input either by early fusion (all sequences stacked as channels into one encoder) or by
``fusion="cross_attention"``: one encoder stem per modality, whose bottleneck tokens attend to the tokens of
the other modalities before the shared transformer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.blocks import Decoder, Encoder, channel_widths
from edgeseg.models.registry import register_model


class MultiHeadAttention(nn.Module):
    """Plain multi-head attention with explicit ``num_heads``/``head_dim`` (pruning updates both)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(b, context.shape[1], 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ kv[0].transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)
        out = (attn @ kv[1]).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: LN → attention → residual, LN → MLP(GELU) → residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionFusion(nn.Module):
    """Each modality's tokens attend to the others' tokens; the fused tokens are their mean."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        fused = []
        for i, t in enumerate(tokens):
            others = torch.cat([o for j, o in enumerate(tokens) if j != i], dim=1)
            fused.append(t + self.attn(self.norm_q(t), self.norm_kv(others)))
        return torch.stack(fused, dim=0).mean(dim=0)


class HybridTransUNet(nn.Module):
    """CNN encoder → tokens (+ positional embedding resized to the input) → transformer → CNN decoder.

    ``img_size`` is only the reference size of the learned positional embedding; other input sizes that
    divide by ``2**depth`` work too (the embedding is interpolated).
    """

    def __init__(self, in_channels: int, num_classes: int, *, base: int = 16, depth: int = 4,
                 max_width: int | None = 128, embed_dim: int = 128, num_layers: int = 2, num_heads: int = 4,
                 mlp_ratio: float = 2.0, img_size: int = 256, fusion: str = "early", attention: bool = True,
                 upsample: str = "transpose", norm: str = "batch"):
        super().__init__()
        if fusion not in ("early", "cross_attention"):
            raise ValueError(f"fusion must be 'early' or 'cross_attention', got {fusion!r}")
        if fusion == "cross_attention" and in_channels < 2:
            raise ValueError("fusion='cross_attention' needs at least two input modalities (in_channels >= 2)")
        if img_size % 2**depth:
            raise ValueError(f"img_size {img_size} must be divisible by 2**depth = {2**depth}")
        self.fusion, self.depth, self.dims = fusion, depth, 2
        widths = channel_widths(base, depth, max_width)
        n_enc = in_channels if fusion == "cross_attention" else 1
        enc_in = 1 if fusion == "cross_attention" else in_channels
        self.encoders = nn.ModuleList(Encoder(2, enc_in, widths, norm) for _ in range(n_enc))
        self.to_tokens = nn.Conv2d(widths[-1], embed_dim, 1)
        grid = img_size // 2**depth
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.cross = CrossAttentionFusion(embed_dim, num_heads) if fusion == "cross_attention" else None
        self.blocks = nn.ModuleList(TransformerBlock(embed_dim, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.from_tokens = nn.Sequential(nn.Conv2d(embed_dim, widths[-1], 1, bias=False),
                                         nn.BatchNorm2d(widths[-1]) if norm == "batch" else
                                         nn.InstanceNorm2d(widths[-1], affine=True), nn.ReLU(inplace=True))
        self.decoder = Decoder(2, widths, num_classes, attention=attention, upsample=upsample, norm=norm)

    def _tokens(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.to_tokens(feature)
        pos = F.interpolate(self.pos_embed, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (x + pos).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cross is None:
            features = self.encoders[0](x)
            skips, tokens = features[:-1], self._tokens(features[-1])
        else:
            per_mod = [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]
            skips = [torch.stack(level, 0).mean(0) for level in zip(*(f[:-1] for f in per_mod))]
            tokens = self.cross([self._tokens(f[-1]) for f in per_mod])
        h, w = x.shape[-2] // 2**self.depth, x.shape[-1] // 2**self.depth
        for block in self.blocks:
            tokens = block(tokens)
        bottom = self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return self.decoder(self.from_tokens(bottom), skips)


@register_model("hybrid", "TransUNet-style CNN + transformer bottleneck, attention-gated skips; early or cross-attention fusion")
def hybrid(in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    return HybridTransUNet(in_channels, num_classes, **kwargs)
