"""A fixed CPU workload timed in every bench run beside the artifacts, so a CI gate can divide an artifact's
latency by it: a runner that is uniformly faster or slower then leaves the ratio unchanged, while a change
of the model (which also moves the FP32 reference) still shows.

The workload is an FP32 ONNX graph — eight 3×3 convolutions, 16 channels, 128×128 — with fixed weights. It
reads its input only through a scalar mean, so it accepts any model input and costs the same whatever the
model. It runs on each CPU runtime that has artifacts in the run (ONNX Runtime always; each other target with
a ``workload_runner`` — OpenVINO, PyTorch eager — when timed), with the bench's thread count: runtimes react differently to a busy machine — on 2 cores
with one core 30 % busy elsewhere, OpenVINO INT8 slowed 20–70 % while ONNX Runtime barely moved — so an
artifact is divided by the workload of its own runtime (benchmarks/README.md, "gate under contention").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact

WORKLOAD_NAME = "edgeseg-conv-workload-v1"  # bump the suffix if the computation below ever changes
BASE_RUNTIME = "onnxruntime"  # the workload's plain name is its time on ONNX Runtime, timed in every run
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


def workload_key(runtime: str) -> str:
    """The name the workload on ``runtime`` is timed under (ONNX Runtime's is the plain name)."""
    return WORKLOAD_NAME if runtime == BASE_RUNTIME else f"{WORKLOAD_NAME}@{runtime}"


def workload_runtimes() -> list[str]:
    """The runtimes the workload can run on: ONNX Runtime, then each registered target with a workload runner."""
    from edgeseg.targets.registry import registered_targets

    others = [n for n, t in registered_targets().items() if t.workload_runner is not None and n != BASE_RUNTIME]
    return [BASE_RUNTIME, *others]


def workload_artifacts(folder: Path, runtimes) -> list[Artifact]:
    """Entries :func:`~edgeseg.benchmark.isolated.measure_isolated` can time: the workload on ONNX Runtime and on
    each other runtime of ``runtimes`` that has a workload runner."""
    write_workload(Path(folder) / "workload.onnx")
    wanted = [r for r in workload_runtimes() if r == BASE_RUNTIME or r in set(runtimes)]
    return [Artifact(name=workload_key(r), runtime=r, precision="fp32", files={"model": "workload.onnx"}, profile="",
                     recorded={"workload": True, "model_only": True}, root=Path(folder)) for r in wanted]


def load_workload(folder: Path, runtime: str, threads: int | None, rank: int):
    """A predictor of the workload on ``runtime`` for inputs of ``rank`` dimensions (the target's workload runner)."""
    from edgeseg.targets.registry import get_target

    runner = get_target(runtime).workload_runner
    if runner is None:
        raise ValueError(f"no workload runner for runtime {runtime!r}")
    return runner(Path(folder) / "workload.onnx", threads, rank)


class TorchWorkload:
    """The same graph in PyTorch eager, weights read from the ONNX file (the torch target's workload runner)."""

    def __init__(self, path: Path, threads: int | None):
        import onnx
        import torch
        from onnx import numpy_helper

        if threads:
            torch.set_num_threads(int(threads))
        arrays = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(path)).graph.initializer}
        self.base, self.weights = arrays["base"], [arrays[f"w{i}"] for i in range(_LAYERS)]
        self.executed_precision = f"fp32 (PyTorch {torch.__version__} eager, cpu)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = self.base + torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).mean()
            for w in self.weights:
                x = F.relu(F.conv2d(x, w, padding=1))
            return x.numpy()
