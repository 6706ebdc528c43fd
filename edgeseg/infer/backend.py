"""``--backend auto``: the best runtime installed here that the bundle has an artifact for, in the order of the
targets' ``infer_preference`` — TensorRT on an NVIDIA GPU (with an engine built for it), OpenVINO on x86, ONNX
Runtime otherwise — and, within a runtime, the compressed artifact before the FP32 one."""
from __future__ import annotations

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError
from edgeseg.targets import get_target, infer_order

_PRECISION_ORDER = {"int8": 0, "fp16": 1, "bf16": 2, "fp32": 3}


def backends() -> tuple[str, ...]:
    """What ``--backend`` accepts: ``auto`` and every registered target that infers, most preferred first."""
    return ("auto", *infer_order())


def __getattr__(name: str):
    if name == "BACKENDS":  # the registry's, when asked (targets register at any time)
        return backends()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def choose_artifact(artifacts: list[Artifact], backend: str = "auto", name: str | None = None,
                    engine_cache: bool = False) -> tuple[Artifact, str]:
    """``(artifact, why it was chosen)``; an error naming what is missing when nothing fits. With an engine
    cache, a TensorRT artifact without an engine for this device qualifies (the engine is built on first use)."""
    order = infer_order()
    if backend not in ("auto", *order):
        raise EdgesegError(f"--backend must be one of {', '.join(('auto', *order))}, got {backend!r}")
    artifacts = [a for a in artifacts if a.runtime in order]
    if name:
        chosen = [a for a in artifacts if a.name == name]
        if not chosen:
            raise EdgesegError(f"no artifact {name!r} in the bundle; it has {', '.join(a.name for a in artifacts)}")
        artifacts = chosen
    skipped = []
    for runtime in order if backend == "auto" else [backend]:
        options = sorted((a for a in artifacts if a.runtime == runtime), key=lambda a: _PRECISION_ORDER.get(a.precision, 9))
        if not options:
            skipped.append(f"{runtime}: no artifact in the bundle")
            continue
        target = get_target(runtime)
        reason = target.missing() or target.not_ready(options[0], engine_cache)
        if reason:
            skipped.append(f"{runtime}: {reason}")
            continue
        why = ("--backend auto: " + "; ".join(skipped) + ("; " if skipped else "") if backend == "auto" else "")
        return options[0], f"{why}{runtime} ({options[0].name}, {options[0].precision})"
    raise EdgesegError(f"no runnable artifact for --backend {backend}: {'; '.join(skipped)}")
