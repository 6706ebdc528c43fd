"""Whole-head pruning of ``MultiHeadAttention`` (``q``: D→h·d, ``kv``: D→2·h·d, ``proj``: h·d→D).

Removing a whole head keeps ``head_dim`` and with it the softmax scale ``head_dim**-0.5``: the remaining
heads compute exactly what they computed before, and the removed heads' mean output is folded into the
``proj`` bias. ``num_heads * head_dim`` stays equal to the inner width of all three layers.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from edgeseg.pruning.stats import ActivationStats, compensate_bias


def heads_to_keep(num_heads: int, ratio: float) -> int:
    return max(1, num_heads - round(num_heads * ratio))


def head_importance(attn: nn.Module) -> torch.Tensor:
    """Squared weight magnitude of each head over its query, key, value rows and ``proj`` columns."""
    h, d = attn.num_heads, attn.head_dim
    q = attn.q.weight.detach().pow(2).sum(1).view(h, d)
    k, v = attn.kv.weight.detach().pow(2).sum(1).view(2, h, d)
    out = attn.proj.weight.detach().pow(2).sum(0).view(h, d)
    return (q + k + v + out).sum(1).cpu()


@torch.no_grad()
def prune_heads(attn: nn.Module, keep: int, stats: ActivationStats | None = None) -> list[int]:
    """Keep the ``keep`` most important heads of ``attn``; returns the removed head indices."""
    if keep >= attn.num_heads:
        return []
    removed = sorted(torch.argsort(head_importance(attn))[: attn.num_heads - keep].tolist())
    d, inner = attn.head_dim, attn.num_heads * attn.head_dim
    cols = [h * d + i for h in removed for i in range(d)]
    if stats is not None:
        compensate_bias(attn.proj, cols, stats)
    tp.prune_linear_out_channels(attn.q, cols)
    tp.prune_linear_out_channels(attn.kv, cols + [inner + c for c in cols])  # keys, then values
    tp.prune_linear_in_channels(attn.proj, cols)
    attn.num_heads = keep
    return removed
