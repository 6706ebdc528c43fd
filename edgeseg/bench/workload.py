"""A fixed CPU workload timed in every bench run beside the artifacts, so a CI gate can divide an artifact's
latency by it: a runner that is uniformly faster or slower then leaves the ratio unchanged, while a change
of the model (which also moves the FP32 reference) still shows.

The workload is an FP32 ONNX graph — eight 3×3 convolutions, 16 channels, 128×128 — with fixed weights, run on
ONNX Runtime with the bench's thread count. It reads its input only through a scalar mean, so it accepts
any model input and costs the same whatever the model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

WORKLOAD_NAME = "edgeseg-conv-workload-v1"  # bump the suffix if the graph below ever changes
_LAYERS, _CHANNELS, _SIZE = 8, 16, 128


def write_workload(path: Path) -> Path:
    """Write the workload ONNX to ``path`` (deterministic: the same bytes every time)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, _CHANNELS, _SIZE, _SIZE)).astype(np.float32), "base")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["level"], keepdims=0),
             helper.make_node("Add", ["base", "level"], ["x0"])]
    for i in range(_LAYERS):
        w = (rng.standard_normal((_CHANNELS, _CHANNELS, 3, 3)) / np.sqrt(9 * _CHANNELS)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [f"x{i}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"x{i + 1}"])]
    graph = helper.make_graph(nodes, WORKLOAD_NAME, [helper.make_tensor_value_info("input", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(f"x{_LAYERS}", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeseg")
    onnx.save(model, str(path))
    return path


def workload_artifact(folder: Path) -> dict:
    """The workload as an artifact entry :func:`~edgeseg.bench.isolated.measure_isolated` can time."""
    write_workload(Path(folder) / "workload.onnx")
    return {"name": WORKLOAD_NAME, "runtime": "onnxruntime", "precision": "fp32", "device": "cpu",
            "files": {"model": "workload.onnx"}, "root": str(folder), "model_only": True}
