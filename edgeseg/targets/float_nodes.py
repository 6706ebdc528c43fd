"""Which ONNX nodes stay float under INT8: the "fragile ops" preset plus the user's ``--keep-float`` patterns.

Ops that users of every quantizer report as breaking segmentation under INT8 stay float by default:
LayerNorm, Softmax, GELU, the residual Adds of the transformer, InstanceNorm and the final logits layer.
Nodes are classified by the module they came from (the exporter records each node's module path and class
hierarchy) and, for foreign graphs without that metadata, by op type.
"""
from __future__ import annotations

import ast
import fnmatch
import re

PRESET = {
    "layernorm": "LayerNorm: per-token statistics of the transformer; INT8 inputs shift mean/variance",
    "softmax": "attention Softmax and the attention-weights × V MatMul it feeds (ONNX Runtime otherwise fuses a "
               "quantized Softmax back in, ~8× slower)",
    "gelu": "GELU (Erf form) in the transformer MLP",
    "residual_add": "residual Adds of the transformer: two activation ranges summed into one INT8 scale",
    "instancenorm": "InstanceNorm: per-image statistics (common in 3D/MRI U-Nets)",
    "logits": "final logits layer: its rounding flips boundary pixels directly",
    "first_conv": "first convolution on the raw 1–3 input channels: the largest INT8 error source and no faster in INT8",
}
_PASS_THROUGH = ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split")
_MODULE_KIND = {"LayerNorm": "layernorm", "GELU": "gelu", "Softmax": "softmax", "InstanceNorm1d": "instancenorm",
                "InstanceNorm2d": "instancenorm", "InstanceNorm3d": "instancenorm"}
_OP_KIND = {"LayerNormalization": "layernorm", "Softmax": "softmax", "Erf": "gelu", "Gelu": "gelu",
            "InstanceNormalization": "instancenorm"}
_TRANSFORMER = re.compile(r"transformer|multihead|crossattention|encoderlayer", re.I)


def node_info(node) -> dict:
    """Name, op type, module path and module classes of one ONNX node (empty when not recorded)."""
    meta = {e.key: e.value for e in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):
        scopes, classes = [], []
    module = scopes[-2] if len(scopes) >= 2 else ""
    return {"name": node.name, "op_type": node.op_type, "module": module,
            "classes": [c.rsplit(".", 1)[-1] for c in classes[:-1]]}


def _preset_kind(info: dict, node, initializers: set[str], output_nodes: set[str], softmax_outputs: set[str],
                 raw_inputs: set[str]) -> str | None:
    for cls in reversed(info["classes"]):
        if cls in _MODULE_KIND:
            return _MODULE_KIND[cls]
    if info["op_type"] in _OP_KIND:
        return _OP_KIND[info["op_type"]]
    if node.name in output_nodes:
        return "logits"
    if info["op_type"] == "MatMul" and softmax_outputs.intersection(node.input):
        return "softmax"
    if info["op_type"] == "Conv" and node.input[0] in raw_inputs:
        return "first_conv"
    if (info["op_type"] == "Add" and not any(i in initializers for i in node.input)
            and any(_TRANSFORMER.search(c) for c in info["classes"])
            and not any(c == "Linear" for c in info["classes"])):
        return "residual_add"
    return None


def _output_producers(graph) -> set[str]:
    """Nodes computing the graph outputs, looking through Identity/Cast/Reshape."""
    producer = {o: n for n in graph.node for o in n.output}
    found, todo = set(), [o.name for o in graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None:
            continue
        if node.op_type in _PASS_THROUGH[:5]:
            todo.extend(node.input[:1])
        else:
            found.add(node.name)
    return found


def matches(info: dict, pattern: str) -> bool:
    """``pattern`` (fnmatch) against the node name, op type or module path; ``@kind`` names a preset group."""
    return any(fnmatch.fnmatchcase(v, pattern) for v in (info["name"], info["op_type"], info["module"]) if v)


def plan_float_nodes(model, preset: bool = True, keep_float: list[str] = (), quantize: list[str] = ()) -> list[dict]:
    """Nodes of ``model`` (an ``onnx.ModelProto``) that stay float, each with the reason.

    ``keep_float`` patterns add nodes (``@gelu`` adds a whole preset group even with ``preset=False``);
    ``quantize`` patterns remove nodes from the plan (e.g. ``@residual_add`` to quantize those Adds).
    """
    unknown = [p[1:] for p in [*keep_float, *quantize] if p.startswith("@") and p[1:] not in PRESET]
    if unknown:
        from edgeseg.errors import EdgesegError

        raise EdgesegError(f"unknown float-op group @{unknown[0]}; groups: {', '.join('@' + k for k in PRESET)}")
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    outputs = _output_producers(graph)
    softmax_outputs = {o for n in graph.node if n.op_type == "Softmax" for o in n.output}
    raw_inputs = {i.name for i in graph.input} - initializers  # the image, and views of it (per-modality slices)
    for n in graph.node:
        if n.op_type in _PASS_THROUGH and n.input and n.input[0] in raw_inputs:
            raw_inputs.update(n.output)
    plan, type_counts = [], {}
    for node in graph.node:
        info = node_info(node)
        type_index = type_counts[node.op_type] = type_counts.get(node.op_type, -1) + 1
        kind = _preset_kind(info, node, initializers, outputs, softmax_outputs, raw_inputs)
        reason = None
        if preset and kind:
            reason = f"preset @{kind}"
        for pattern in keep_float:
            if (pattern.startswith("@") and kind == pattern[1:]) or (not pattern.startswith("@") and matches(info, pattern)):
                reason = f"--keep-float {pattern}"
        if reason and any((p.startswith("@") and kind == p[1:]) or (not p.startswith("@") and matches(info, p))
                          for p in quantize):
            reason = None
        if reason:
            plan.append({"name": info["name"], "op_type": info["op_type"], "module": info["module"],
                         "type_index": type_index, "reason": reason})
    for entry in plan:  # lets a runtime that renames decomposed ops map them by position among their type
        entry["type_count"] = type_counts[entry["op_type"]] + 1
    return plan
