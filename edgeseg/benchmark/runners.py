"""Loading a bundle's artifacts for measurement: a predictor where the runtime is here, else the reason."""
from __future__ import annotations

from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError
from edgeseg.targets import get_target


def load_runners(artifacts: list[Artifact], bundle_dir: Path, threads: dict[str, int | None],
                 skip=()) -> tuple[dict, dict[str, tuple[str, str]]]:
    """``(predictors, others)``: a :class:`~edgeseg.targets.Predictor` per artifact that runs on this machine, and
    for the rest ``(status, reason)`` with status ``accuracy_only`` (the target's stand-in checks the artifact's
    accuracy, e.g. a TensorRT QDQ ONNX on ONNX Runtime's CPU kernels where TensorRT is absent) or
    ``not_measured``. An artifact may have its own ``root`` folder."""
    runners, others = {}, {}
    for artifact in (a for a in artifacts if a.name not in skip):
        name, target = artifact.name, get_target(artifact.runtime)
        reason = target.missing()
        try:
            stand_in = target.stand_in(bundle_dir, artifact, threads.get(name), reason) if reason else None
            if stand_in is not None:
                runners[name], note = stand_in
                others[name] = ("accuracy_only", note)
            elif reason:
                others[name] = ("not_measured", reason)
            else:
                runners[name] = target.load(bundle_dir, artifact, threads.get(name))
        except EdgesegError as exc:  # e.g. a CUDA profile on a machine without a GPU
            others[name] = ("not_measured", str(exc))
        except Exception as exc:  # a runtime refusing the file: report it, measure the others
            others[name] = ("not_measured", f"failed to load: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return runners, others
