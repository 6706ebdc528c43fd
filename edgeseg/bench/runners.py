"""Loading a bundle's artifacts for measurement: a runner where the runtime is here, else the reason."""
from __future__ import annotations

from pathlib import Path

from ..errors import EdgesegError
from ..targets import get_target


def load_runners(artifacts: list[dict], bundle_dir: Path, threads: dict[str, int | None],
                 skip=()) -> tuple[dict, dict[str, tuple[str, str]]]:
    """``(runners, others)``: a runner per artifact that runs on this machine, and for the rest
    ``(status, reason)`` with status ``accuracy_only`` (a TensorRT QDQ ONNX checked on ONNX Runtime's CPU
    kernels where TensorRT is absent) or ``not_measured``. An artifact may carry its own ``root`` folder."""
    from ..bundle import artifact_bytes
    from ..targets.onnxruntime_backend import OrtRunner

    runners, others = {}, {}
    for artifact in (a for a in artifacts if a["name"] not in skip):
        reason = get_target(artifact["runtime"]).missing()
        try:
            if artifact["runtime"] == "tensorrt" and reason:
                runners[artifact["name"]] = OrtRunner(artifact_bytes(bundle_dir, artifact, "model"), artifact["precision"],
                                                      "cpu", threads.get(artifact["name"]), name=artifact["files"]["model"])
                others[artifact["name"]] = ("accuracy_only", f"QDQ ONNX on ONNX Runtime CPU (TensorRT: {reason}); "
                                                             "latency not representative, not measured")
            elif reason:
                others[artifact["name"]] = ("not_measured", reason)
            else:
                runners[artifact["name"]] = get_target(artifact["runtime"]).load(bundle_dir, artifact,
                                                                                 threads.get(artifact["name"]))
        except EdgesegError as exc:  # e.g. a CUDA profile on a machine without a GPU
            others[artifact["name"]] = ("not_measured", str(exc))
        except Exception as exc:  # a runtime refusing the file: report it, measure the others
            others[artifact["name"]] = ("not_measured", f"failed to load: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return runners, others
