"""``--backend auto``: the best runtime installed here that the bundle has an artifact for — TensorRT on an
NVIDIA GPU (with an engine built for it), OpenVINO on x86, ONNX Runtime otherwise — and, within a runtime,
the compressed artifact before the FP32 one."""
from __future__ import annotations

import platform

from ..errors import EdgesegError
from ..targets import get_target

BACKENDS = ("auto", "tensorrt", "openvino", "onnxruntime")
_PRECISION_ORDER = {"int8": 0, "fp16": 1, "bf16": 2, "fp32": 3}


def _preference() -> list[str]:
    order = ["tensorrt"]
    order += ["openvino", "onnxruntime"] if platform.machine().lower() in ("x86_64", "amd64") else ["onnxruntime", "openvino"]
    return order


def choose_artifact(manifest: dict, backend: str = "auto", name: str | None = None,
                    engine_cache: bool = False) -> tuple[dict, str]:
    """``(artifact, why it was chosen)``; an error naming what is missing when nothing fits. With an engine
    cache, a TensorRT artifact without an engine for this device qualifies (the engine is built on first use)."""
    if backend not in BACKENDS:
        raise EdgesegError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    artifacts = [a for a in manifest["artifacts"] if a["runtime"] != "torch"]
    if name:
        chosen = [a for a in artifacts if a["name"] == name]
        if not chosen:
            raise EdgesegError(f"no artifact {name!r} in the bundle; it has {', '.join(a['name'] for a in artifacts)}")
        artifacts = chosen
    runtimes = _preference() if backend == "auto" else [backend]
    skipped = []
    for runtime in runtimes:
        options = sorted((a for a in artifacts if a["runtime"] == runtime),
                         key=lambda a: _PRECISION_ORDER.get(a["precision"], 9))
        if not options:
            skipped.append(f"{runtime}: no artifact in the bundle")
            continue
        reason = get_target(runtime).missing()
        if reason:
            skipped.append(f"{runtime}: {reason}")
            continue
        if runtime == "tensorrt" and not engine_cache and not any(k.startswith("engine:") for k in options[0]["files"]):
            skipped.append("tensorrt: no engine in the bundle (pass --engine-cache DIR or run `edgeseg build-engine`)")
            continue
        why = ("--backend auto: " + "; ".join(skipped) + ("; " if skipped else "") if backend == "auto" else "")
        return options[0], f"{why}{runtime} ({options[0]['name']}, {options[0]['precision']})"
    raise EdgesegError(f"no runnable artifact for --backend {backend}: {'; '.join(skipped)}")
