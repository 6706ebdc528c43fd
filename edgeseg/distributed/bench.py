"""`edgeseg bench --ray ADDRESS --device-classes A,B`: one bench per device class, each on a node of the cluster
that advertises the custom resource ``edgeseg-device:<class>`` (``ray start --resources
'{"edgeseg-device:jetson-orin-nano": 1}'``), its results gathered into one folder (``<out>/<class>.json`` with its
Markdown and plot) for ``edgeseg gate --baseline-dir`` over all of them. The bundle and the data must be at the
same paths on every node. The resource is requested whole, so a node runs one bench at a time.
"""
from __future__ import annotations

import re
import socket
import time
from dataclasses import asdict
from pathlib import Path

from edgeseg.distributed.cluster import DEVICE_RESOURCE, connected, ray_failure
from edgeseg.errors import EdgesegError, InputError, UsageError
from edgeseg.progress import progress_bar

_CLASS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_device_classes(text: str | list[str] | None) -> list[str]:
    """``a,b`` → ``["a", "b"]``; a name must be a gate device-class name (letters, digits, ``.``, ``_``, ``-``)."""
    names = [n.strip() for part in ([text] if isinstance(text, str) else text or []) for n in part.split(",") if n.strip()]
    if not names:
        raise UsageError("--device-classes: give at least one device class, e.g. cpu-x86_64-avx2-2t,jetson-orin-nano")
    for name in names:
        if not _CLASS.match(name):
            raise UsageError(f"--device-classes: {name!r} is not a device-class name (letters, digits, . _ -)")
    if len(set(names)) != len(names):
        raise UsageError("--device-classes: a class is named twice")
    return names


def result_paths(out_dir: Path, classes: list[str]) -> dict[str, Path]:
    """Where each class's result goes: ``<out_dir>/<class>.json`` (Markdown and plot beside it)."""
    return {name: Path(out_dir) / f"{name}.json" for name in classes}


def _bench_on_node(cfg_fields: dict, device_class: str, explain_cases: int | None) -> dict:
    """Runs on a node of ``device_class``: the same bench as a local ``edgeseg bench``, the node recorded."""
    from edgeseg.benchmark.harness import BenchConfig, run_bench

    cfg = BenchConfig(**cfg_fields)
    result = run_bench(cfg)
    if explain_cases:
        from edgeseg.explanation.bench import add_explanation

        add_explanation(result, cfg, explain_cases)
    # the class the node advertises is the one its results are gated in (edgeseg.gating.device_class)
    result["device"]["fleet"] = {"device_class": device_class, "node": socket.gethostname()}
    return result


def _missing_classes(ray, classes: list[str]) -> list[str]:
    available = ray.cluster_resources()
    return [c for c in classes if available.get(DEVICE_RESOURCE + c, 0) < 1]


def run_fleet_bench(cfg, address: str, classes: list[str], out_dir: Path,
                    explain_cases: int | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """Bench ``cfg`` once per device class on the cluster at ``address``; writes each result as it arrives.
    Returns ``({class: result JSON path}, {class: why it failed})``: a class whose bench failed does not stop
    the others."""
    from edgeseg.benchmark.report import write_reports

    paths, written, failed = result_paths(out_dir, classes), {}, {}
    fields = {**asdict(cfg), "bundle": str(Path(cfg.bundle).resolve()), "data": str(Path(cfg.data).resolve())}
    if fields.get("baseline_checkpoint"):
        fields["baseline_checkpoint"] = str(Path(fields["baseline_checkpoint"]).resolve())
    with connected(address) as ray:
        if missing := _missing_classes(ray, classes):
            raise InputError(f"no node of the cluster advertises {', '.join(DEVICE_RESOURCE + c for c in missing)} "
                             "(start those nodes with ray start --resources '{\"" + DEVICE_RESOURCE + missing[0]
                             + "\": 1}')")
        task = ray.remote(_bench_on_node)
        pending = {task.options(resources={DEVICE_RESOURCE + c: 1}, max_retries=0).remote(fields, c, explain_cases): c
                   for c in classes}
        start = time.perf_counter()
        with progress_bar() as bar:
            progress = bar.add_task("bench (ray)", total=len(classes), info="")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                    out_dir.mkdir(parents=True, exist_ok=True)
                    written[name] = write_reports(result, paths[name])["json"]
                except Exception as exc:  # that class failed: the others go on
                    cause = getattr(exc, "cause", None)
                    failed[name] = str(cause) if isinstance(cause, EdgesegError) else str(ray_failure(exc))
                bar.update(progress, advance=1, info=f"{name} done after {time.perf_counter() - start:.0f} s")
    return written, failed
