"""Pre- and post-processing in the deployed graph (issue K): an *end-to-end* graph takes a 2D image as stored
(``uint8``, native size, height × width × channels) and returns its label map (``uint8``, the input's size).

The ops reproduce the host path (:class:`~edgeseg.data.preprocessing.PreprocessSpec` + ``restore`` +
``label_map``) exactly, not approximately:

- percentile clipping from a 256-bin histogram (exact for ``uint8``: the same order statistics and the same linear
  interpolation as ``np.percentile``), the z-score's mean and std from the same histogram;
- clipping at full resolution, a linear resize (half-pixel centres, no antialiasing) to the model's size, then the
  affine part of the normalization (it commutes with a linear resize);
- the logits resized linearly back to the input's size, then argmax (ties to the lower class).

The graphs are plain ONNX (opset ≥ 18), built once at compress time; ONNX Runtime runs them stitched around the
model (:func:`wrap_onnx`), OpenVINO stitches the converted pre and post graphs around its IR.
"""
from __future__ import annotations

import numpy as np

RAW, LABELS, HW = "raw", "labels", "edgeseg_hw"
PREFIX = "edgeseg_pp/"
MIN_OPSET = 18


def unsupported(spec, dims: int) -> str | None:
    """Why this preprocessing cannot go into the graph, or None when it can."""
    if dims != 2:
        return "volumes are windowed on the host (only 2D images go end to end)"
    if spec.resize != "resize":
        return f"resize mode {spec.resize!r} (only 'resize' goes in the graph)"
    if spec.mask_nonzero or spec.crop_nonzero:
        return "non-zero masking/cropping"
    return None


class _Graph:
    """A tiny ONNX graph builder: every name gets the edgeseg prefix, constants become initializers."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{PREFIX}{hint}_{self._n}"

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, out=None, **attrs):
        from onnx import helper

        names = [out] if out else [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name(op_type), **attrs))
        return names[0] if outputs == 1 else names


def _percentiles(g: _Graph, raw: str, channels: int, pcts: tuple[float, float]) -> tuple[str, str, str, str]:
    """Per-channel low and high percentiles of a uint8 (H, W, C) image, the histogram (C, 256, int64) and the
    pixel count (float): np.percentile's linear interpolation between order statistics."""
    from onnx import TensorProto

    # int32 indices and counts (half the memory traffic of int64): MAX_PIXELS (2^25) stays far below 2^31
    idx = g.op("Cast", [raw], to=TensorProto.INT32)
    if channels > 1:
        idx = g.op("Add", [idx, g.const(np.arange(channels) * 256, np.int32)])  # channel c's bins at c * 256
    idx = g.op("Reshape", [idx, g.const([-1], np.int64)])
    ones = g.op("ConstantOfShape", [g.op("Shape", [idx])], value=_tensor(np.ones(1, np.int32)))
    hist = g.op("ScatterElements", [g.const(np.zeros(256 * channels), np.int32), idx, ones], reduction="add")
    hist = g.op("Reshape", [hist, g.const([channels, 256], np.int64)])
    cum = g.op("CumSum", [hist, g.const(1, np.int64)])
    count = g.op("Cast", [g.op("ReduceSum", [g.op("Slice", [hist, *(g.const([x], np.int64) for x in (0, 1, 0))]),
                                            g.const([1], np.int64)], keepdims=0)], to=TensorProto.DOUBLE)
    out = []
    for p in pcts:
        rank = g.op("Mul", [g.op("Sub", [count, g.const(1.0, np.float64)]), g.const(p / 100.0, np.float64)])
        low = g.op("Floor", [rank])
        frac = g.op("Cast", [g.op("Sub", [rank, low])], to=TensorProto.FLOAT)
        values = []
        for k in (low, g.op("Add", [low, g.const(1.0, np.float64)])):
            k = g.op("Cast", [k], to=TensorProto.INT32)  # the k-th smallest value is #bins whose cumsum ≤ k
            at_or_below = g.op("Cast", [g.op("LessOrEqual", [cum, k])], to=TensorProto.FLOAT)
            values.append(g.op("ReduceSum", [at_or_below, g.const([1], np.int64)], keepdims=0))
        step = g.op("Mul", [g.op("Sub", [values[1], values[0]]), frac])
        out.append(g.op("Add", [values[0], step], hint=f"p{p}"))
    return out[0], out[1], hist, g.op("Cast", [count], to=TensorProto.FLOAT)


def _tensor(array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array)


def _histogram_moments(g: _Graph, hist: str, count: str, low: str, high: str) -> tuple[str, str]:
    """Mean and (population) std of the image clipped to [low, high], per channel, from its histogram."""
    from onnx import TensorProto

    levels = g.const(np.arange(256, dtype=np.float32)[None], hint="levels")
    clipped = g.op("Min", [g.op("Max", [levels, g.op("Unsqueeze", [low, g.const([1], np.int64)])]),
                           g.op("Unsqueeze", [high, g.const([1], np.int64)])])
    weights = g.op("Cast", [hist], to=TensorProto.FLOAT)
    axis = g.const([1], np.int64)
    mean = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [weights, clipped]), axis], keepdims=1), count])
    centred = g.op("Sub", [clipped, mean])
    var = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [weights, g.op("Mul", [centred, centred])]), axis],
                            keepdims=0), count])
    return g.op("Squeeze", [mean, axis]), g.op("Sqrt", [var])


def _per_channel(g: _Graph, vector: str) -> str:
    """(C,) → (1, C, 1, 1), to broadcast over an NCHW image."""
    return g.op("Reshape", [vector, g.const([1, -1, 1, 1], np.int64)])


def _normalization(g: _Graph, spec, raw: str, channels: int) -> tuple[list[str] | None, str | None, str | None]:
    """(clip bounds or None, shift, scale): the image is clipped at full size, then ``(x - shift) / scale`` after
    the resize. Shift and scale are (C,) tensors, or None for an identity."""
    lo, hi = (None, None)
    if spec.normalization in ("zscore", "minmax"):
        if spec.clip_percentiles:
            lo, hi, hist, count = _percentiles(g, raw, channels, spec.clip_percentiles)
        else:
            lo, hi, hist, count = _percentiles(g, raw, channels, (0.0, 100.0))  # the min and max
        if spec.normalization == "minmax":
            return ([lo, hi] if spec.clip_percentiles else None), lo, \
                g.op("Max", [g.op("Sub", [hi, lo]), g.const(1e-6)])
        mean, std = _histogram_moments(g, hist, count, lo, hi)
        return ([lo, hi] if spec.clip_percentiles else None), mean, g.op("Max", [std, g.const(1e-6)])
    if spec.normalization == "ct_window":
        low, high = spec.window
        return [g.const([low] * channels), g.const([high] * channels)], g.const([low] * channels), \
            g.const([high - low] * channels)
    if spec.normalization == "fixed":
        bounds = [g.const([spec.window[0]] * channels), g.const([spec.window[1]] * channels)] if spec.window else None
        return bounds, g.const([spec.stats[0]] * channels), g.const([spec.stats[1]] * channels)
    return None, None, None


def _resize(g: _Graph, x: str, sizes: str) -> str:
    return g.op("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")


def build_pre_post(spec, classes: int, image_input: str, logits_output: str):
    """The pre nodes (``raw`` → ``image_input``, plus ``HW``) and post nodes (``logits_output`` + ``HW`` →
    ``labels``) as one :class:`_Graph`; ``image_input``/``logits_output`` are the model's tensor names."""
    from onnx import TensorProto

    g, channels = _Graph(), spec.in_channels
    x = g.op("Cast", [RAW], to=TensorProto.FLOAT)
    x = g.op("Unsqueeze", [g.op("Transpose", [x], perm=[2, 0, 1]), g.const([0], np.int64)])
    g.op("Slice", [g.op("Shape", [RAW]), g.const([0], np.int64), g.const([2], np.int64)], out=HW)
    bounds, shift, scale = _normalization(g, spec, RAW, channels)
    if bounds:
        x = g.op("Min", [g.op("Max", [x, _per_channel(g, bounds[0])]), _per_channel(g, bounds[1])])
    x = _resize(g, x, g.const([1, channels, *spec.size], np.int64))
    if shift is None:
        g.op("Identity", [x], out=image_input)
    else:
        g.op("Div", [g.op("Sub", [x, _per_channel(g, shift)]), _per_channel(g, scale)], out=image_input)
    if classes == 2:
        # a linear resize commutes with the difference: argmax of two resized logits is resize(l1 - l0) > 0
        # (ties to class 0, as argmax): one channel resized instead of two, no ArgMax
        one, zero = (g.op("Slice", [logits_output, g.const([k], np.int64), g.const([k + 1], np.int64),
                                    g.const([1], np.int64)]) for k in (1, 0))
        diff = g.op("Sub", [one, zero])
        sizes = g.op("Concat", [g.const([1, 1], np.int64), HW], axis=0)
        labels = g.op("Cast", [g.op("Greater", [_resize(g, diff, sizes), g.const(0.0)])], to=TensorProto.UINT8)
        g.op("Reshape", [labels, HW], out=LABELS)
        return g
    sizes = g.op("Concat", [g.const([1, classes], np.int64), HW], axis=0)
    labels = g.op("ArgMax", [_resize(g, logits_output, sizes)], axis=1, keepdims=0, select_last_index=0)
    g.op("Squeeze", [g.op("Cast", [labels], to=TensorProto.UINT8), g.const([0], np.int64)], out=LABELS)
    return g


def _model(nodes, inits, inputs, outputs, spec):
    from onnx import helper

    graph = helper.make_graph(nodes, "edgeseg_pre_post", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", MIN_OPSET)])


def pre_post_models(spec, classes: int):
    """The pre graph (``raw`` → ``image`` (1, C, *size) float, ``HW``) and the post graph (``logits`` (1, classes,
    *size) + ``HW`` → ``labels``) as two ONNX models, for runtimes that stitch them around their own model."""
    from onnx import TensorProto, helper

    g = build_pre_post(spec, classes, "image", "logits")
    pre_end = next(i for i, n in enumerate(g.nodes) if "image" in n.output) + 1
    raw = helper.make_tensor_value_info(RAW, TensorProto.UINT8, ["height", "width", spec.in_channels])
    hw = helper.make_tensor_value_info(HW, TensorProto.INT64, [2])
    pre_nodes, post_nodes = g.nodes[:pre_end], g.nodes[pre_end:]
    used = {i for n in post_nodes for i in n.input}
    pre = _model(pre_nodes, [t for t in g.inits if t.name not in used], [raw],
                 [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, spec.in_channels, *spec.size]), hw],
                 spec)
    post = _model(post_nodes, [t for t in g.inits if t.name in used],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, *spec.size]), hw],
                  [helper.make_tensor_value_info(LABELS, TensorProto.UINT8, ["height", "width"])], spec)
    return pre, post


def _topological(graph) -> list:
    """The graph's nodes in an order the checker accepts (ORT's FP16 converter appends its input casts last)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # a cycle or a dangling input: leave the rest as it was, the checker names it
            return ordered + pending
        for n in ready:
            known.update(n.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    return ordered


def wrap_onnx(model, spec, classes: int):
    """``model`` (an ``onnx.ModelProto`` with input ``image`` and output ``logits``, FP32 or QDQ) with the pre and
    post nodes around it: input ``raw`` (H, W, C) uint8, output ``labels`` (H, W) uint8."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    (image,), (logits,) = [i.name for i in graph.input], [o.name for o in graph.output]
    g = build_pre_post(spec, classes, image, logits)
    nodes = _topological(graph)
    pre_end = next(i for i, n in enumerate(g.nodes) if image in n.output) + 1
    wrapped = helper.make_graph(
        g.nodes[:pre_end] + nodes + g.nodes[pre_end:], graph.name + "_end_to_end",
        [helper.make_tensor_value_info(RAW, TensorProto.UINT8, ["height", "width", spec.in_channels])],
        [helper.make_tensor_value_info(LABELS, TensorProto.UINT8, ["height", "width"])],
        initializer=list(graph.initializer) + g.inits, value_info=list(graph.value_info))
    opsets = [o if o.domain not in ("", "ai.onnx") else helper.make_opsetid("", max(o.version, MIN_OPSET))
              for o in model.opset_import]
    out = helper.make_model(wrapped, opset_imports=opsets, ir_version=model.ir_version)
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value=prop.value)
    onnx.checker.check_model(out)
    return out


def wrap_openvino(model, spec, classes: int):
    """An ``openvino.Model`` (input ``image``, output ``logits``) with the pre and post graphs stitched around it
    (``model`` is consumed: its parameter is replaced); returns the end-to-end ``openvino.Model``."""
    import io

    import openvino as ov

    pre, post = (ov.convert_model(io.BytesIO(m.SerializeToString())) for m in pre_post_models(spec, classes))
    # a model's outputs are its Result nodes: connect to what feeds them, never to a Result
    produced = {r.get_output_tensor(0).get_any_name(): r.input_value(0) for r in pre.get_results()}
    model.get_parameters()[0].output(0).replace(produced["image"])
    post_inputs = {p.get_friendly_name(): p for p in post.get_parameters()}
    post_inputs["logits"].output(0).replace(model.get_results()[0].input_value(0))
    post_inputs[HW].output(0).replace(produced[HW])
    out = ov.Model(post.get_results(), pre.get_parameters(), f"{model.get_friendly_name()}_end_to_end")
    out.validate_nodes_and_infer_types()
    return out


def end_to_end_request(metadata: dict[str, str]) -> tuple[object | None, int, str | None]:
    """``(spec, classes, why not)`` for an artifact's embedded metadata: the spec is None when its preprocessing
    cannot go into the graph (``why not`` says why)."""
    import json

    from edgeseg.data.preprocessing import PreprocessSpec

    if not all(k in metadata for k in ("edgeseg.preprocessing", "edgeseg.label_names", "edgeseg.spatial_dims")):
        return None, 0, "the artifact records no preprocessing"  # e.g. a trial build of the accuracy-aware search
    spec = PreprocessSpec.from_dict(json.loads(metadata["edgeseg.preprocessing"]))
    classes = len(json.loads(metadata["edgeseg.label_names"]))
    why = unsupported(spec, int(metadata["edgeseg.spatial_dims"]))
    return (None if why else spec), classes, why


def end_to_end_details(why: str | None) -> dict:
    """What an artifact records about its end-to-end graph (or why it has none)."""
    if why:
        return {"end_to_end": None, "end_to_end_not_built": why}
    return {"end_to_end": {"input": f"{RAW}: uint8 (height, width, channels), the image as stored",
                           "output": f"{LABELS}: uint8 (height, width), the label map at the input's size",
                           "in_graph": "percentile clip (256-bin histogram), normalization, linear resize in and "
                                       "out, argmax"}}
