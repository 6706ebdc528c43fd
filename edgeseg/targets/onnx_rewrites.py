"""Exact FP32 graph rewrites that let INT8 kernels run more of the model (applied before quantization)."""
from __future__ import annotations

import numpy as np


def conv_transpose_to_depth_to_space(model, keep: set[str] = frozenset()) -> int:
    """Rewrite every ConvTranspose(kernel 2, stride 2, no pads/groups) as Conv 1×1 (to 4×C_out channels) +
    DepthToSpace(2, CRD), in place; bit-exact in FP32. ONNX Runtime's CPU provider has no INT8 ConvTranspose,
    so without this the decoder's up-sampling stays float. Nodes named in ``keep`` are left alone."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = numpy_helper.to_array(inits[node.input[1]]) if node.input[1:2] and node.input[1] in inits else None
        if (node.op_type != "ConvTranspose" or node.name in keep or weight is None or weight.ndim != 4
                or weight.shape[2:] != (2, 2) or list(attrs.get("strides", [])) != [2, 2] or attrs.get("group", 1) != 1
                or any(attrs.get("pads", [])) or any(attrs.get("output_padding", [])) or any(d != 1 for d in attrs.get("dilations", [1]))):
            nodes.append(node)
            continue
        c_in, c_out = weight.shape[:2]
        inputs = [node.input[0], node.input[1] + "_as_conv1x1"]
        model.graph.initializer.append(numpy_helper.from_array(
            weight.transpose(1, 2, 3, 0).reshape(c_out * 4, c_in, 1, 1).copy(), inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]])
            inputs.append(node.input[2] + "_as_conv1x1")
            model.graph.initializer.append(numpy_helper.from_array(np.repeat(bias, 4).astype(bias.dtype), inputs[2]))
        mid = node.output[0] + "_before_d2s"
        conv = helper.make_node("Conv", inputs, [mid], name=node.name + "_conv1x1", kernel_shape=[1, 1])
        d2s = helper.make_node("DepthToSpace", [mid], list(node.output), name=node.name + "_d2s", blocksize=2, mode="CRD")
        for new in (conv, d2s):
            new.metadata_props.extend(node.metadata_props)
        nodes += [conv, d2s]
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return rewritten


def fix_spatial_size(model, size: tuple[int, ...]) -> None:
    """Pin the input's spatial dims (batch stays dynamic), in place, so shape-dependent subgraphs (e.g. the
    positional-embedding resize) fold into constants. Inference always feeds the preprocessing size."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(list(dims)[2:], size):
        dim.Clear()
        dim.dim_value = int(value)
    for value_info in list(model.graph.value_info):  # stale symbolic shapes would contradict the fixed ones
        model.graph.value_info.remove(value_info)
