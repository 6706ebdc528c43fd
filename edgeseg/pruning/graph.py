"""The torch-pruning dependency graph of an edgeseg model, with the fixes these architectures need.

torch-pruning (DepGraph) traces the autograd graph and couples every layer whose channels must shrink
together. Two things in edgeseg models it gets wrong on its own, both fixed here:

* the attention gate's ``x * alpha`` multiplies a C-channel skip by a 1-channel map (broadcast); DepGraph
  couples the operands channel by channel, which ties every gated skip to the 1-channel ``psi`` conv and
  leaves the encoder outputs that feed a skip unprunable. The broadcast operand's edge is cut.
* ``MultiHeadAttention`` stores keys and values in one ``kv`` Linear reshaped to (2, heads, head_dim);
  DepGraph maps the channels of ``q``, ``kv`` and ``proj`` with the wrong offsets (IndexError, or a model
  that runs but computes garbage). Their inner dims are left out of the graph and pruned head by head in
  :mod:`.attention`; the embedding dim (residual stream, LayerNorms, ``pos_embed``) stays in the graph.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping, shape_infer

PRUNABLE = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The ``MultiHeadAttention`` modules of ``model`` (anything with ``q``, ``kv``, ``proj`` and ``num_heads``)."""
    return [m for m in model.modules() if all(hasattr(m, a) for a in ("q", "kv", "proj", "num_heads", "head_dim"))]


def output_head(model: nn.Module) -> nn.Module | None:
    decoder = getattr(model, "decoder", None)
    return getattr(decoder, "head", None)


@torch.no_grad()
def class_heads(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers that make the model's classes, whatever their names: the last conv/linear layer run whose output
    has as many channels as the model's output (nnU-Net's ``seg_layers[-1]``, MONAI's last convolution), plus
    every layer of a ``seg_layers`` list (nnU-Net's deep-supervision heads, unused at inference, kept whole)."""
    ran: list[tuple[nn.Module, int]] = []
    hooks = [m.register_forward_hook(lambda mod, _, out: ran.append((mod, out.shape[1])))
             for m in model.modules() if isinstance(m, PRUNABLE)]
    training = model.training
    try:
        out = model.eval()(example)  # eval: no batch-norm statistics move
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    out = out[0] if isinstance(out, (list, tuple)) else out
    last = next((m for m, width in reversed(ran) if width == out.shape[1]), None)
    supervision = [m for name, seg in model.named_modules() if name.endswith("seg_layers") for m in seg.modules()
                   if isinstance(m, PRUNABLE)]
    return ([last] if last is not None else []) + supervision


def ignored_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[nn.Module]:
    """Layers whose output channels DepGraph must keep: the class head(s) and the attention projections."""
    head = output_head(model)
    heads = ([head] if head is not None else []) + (class_heads(model, example) if example is not None else [])
    return heads + [lin for a in attention_modules(model) for lin in (a.q, a.kv)]


def unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Bare parameters and the dim that follows the channels: ``pos_embed`` (1, D, g, g) → dim 1."""
    return [(p, 1) for name, p in model.named_parameters() if name.split(".")[-1] == "pos_embed"]


def build_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """DepGraph of ``model`` traced on ``example``, with broadcast multiplications uncoupled."""
    # An in-place ReLU on InstanceNorm's output (a view) hides the norm from the autograd trace: trace without.
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in inplace:
        m.inplace = False
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                      unwrapped_parameters=unwrapped_parameters(model))
    finally:
        for m in inplace:
            m.inplace = True
    if _cut_broadcast_edges(graph):
        for node in graph.module2node.values():
            node.dependencies = []
        graph._build_dependency(graph.module2node)
        shape_infer.init_shape_information(graph)
        index_mapping.update_index_mapping(graph)
    return graph


def _cut_broadcast_edges(graph: tp.DependencyGraph) -> int:
    """Remove the edge from a 1-channel operand into a channel-wise product (a gate, not a feature)."""
    by_grad_fn = {node.grad_fn: node for node in graph.module2node.values() if node.grad_fn is not None}
    cut = 0
    for node in list(graph.module2node.values()):
        fn = node.grad_fn
        if fn is None or not fn.name().startswith("MulBackward"):
            continue
        try:
            operands = [fn._saved_self, fn._saved_other]
        except (AttributeError, RuntimeError):  # a product with a constant, or saved tensors already freed
            continue
        if any(not isinstance(t, torch.Tensor) or t.dim() < 4 for t in operands):  # (B, C, *spatial) maps
            continue
        widths = [t.shape[1] for t in operands]
        for (src_fn, _), width in zip(fn.next_functions, widths):
            src = by_grad_fn.get(src_fn)
            if width == 1 and max(widths) > 1 and src is not None and src in node.inputs:
                node.inputs.remove(src)
                src.outputs.remove(node)
                cut += 1
    return cut


def prunable_groups(graph: tp.DependencyGraph, model: nn.Module, example: torch.Tensor | None = None):
    """Yield ``(root_layer, channels)`` for every group DepGraph may shrink (full-index groups)."""
    ignored = ignored_layers(model, example)
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE):
        root = group[0].dep.target.module
        channels = graph.get_out_channels(root)
        if channels and channels > 1:
            yield root, channels
