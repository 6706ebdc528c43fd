"""``edgeseg infer``: runtime-only segmentation of PNG/JPEG/TIFF, NIfTI and DICOM inputs with a bundle, in this
process or on a Ray cluster (:mod:`edgeseg.distributed.infer`).

``edgeseg.infer(bundle, inputs, out, ...)`` is the Python call of the command; this package is that callable too,
so the name means the same whether or not the package has been imported."""
from __future__ import annotations

import sys
import types
from pathlib import Path

from edgeseg.infer.pipeline import InferConfig, run_local

__all__ = ["InferConfig", "infer", "run_infer"]


def run_infer(cfg: InferConfig) -> dict:
    """Segment every input of ``cfg``: here, or with ``cfg.ray`` on Ray; returns the run summary (what
    ``edgeseg infer --report`` writes: docs/cli.md)."""
    if cfg.ray is not None:
        from edgeseg.distributed.infer import run_infer_ray

        return run_infer_ray(cfg)
    return run_local(cfg)


def infer(bundle, inputs: str | Path | list, out: str | Path, *, ray: str | bool | None = None,
          replicas: int = 1, threads: int | None = None, **options) -> dict:
    """``edgeseg infer`` from Python: segment ``inputs`` (files or folders) into ``out`` with the artifact of
    ``bundle`` (its folder, or an :class:`edgeseg.Bundle`).
    ``ray``: "auto"/True, "local" or a cluster address runs it on Ray with ``replicas`` model replicas of
    ``threads`` threads each; ``options``: the other :class:`InferConfig` fields (``backend``, ``resume``,
    ``force``, ``probabilities``, ``overlay``, ``batch_size`` …). Returns the run summary."""
    from edgeseg.api.options import check_options

    check_options(options, set(InferConfig.__dataclass_fields__) - {"bundle", "inputs", "out", "ray", "replicas",
                                                                    "threads"}, "infer()")
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    bundle = getattr(bundle, "path", bundle)  # an edgeseg.Bundle, or its folder
    return run_infer(InferConfig(bundle=bundle, inputs=inputs, out=out, ray="auto" if ray is True else ray or None,
                                 replicas=replicas, threads=threads, **options))


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> dict:
        return infer(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
