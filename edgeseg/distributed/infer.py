"""`edgeseg infer --ray`: the same segmentation as local `infer`, spread over the model replicas of a Ray cluster.

A Ray Data pipeline: the driver lists the inputs and checks every output path (as local `infer` does), then
``map_batches`` hands batches of input paths to a pool of actors, one per replica. Each actor verifies the
bundle and loads its artifact once, then reads, preprocesses, segments and writes its batch with the very code
of local `infer` (:func:`edgeseg.infer.pipeline.segment`): the masks are the same bytes. Outputs go to the
output folder, which every node must see at the same path (a shared file system), as must the inputs and the
bundle. A replica records each case in a sidecar; the driver appends the records to the ledger as results
arrive, so a killed run leaves nothing the next ``--resume`` cannot account for (:mod:`edgeseg.infer.ledger`).
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgeseg.distributed.cluster import connected, ray_failure
from edgeseg.errors import EdgesegError, UsageError
from edgeseg.infer.inputs import InputItem
from edgeseg.infer.ledger import CaseSidecars, output_lock
from edgeseg.infer.outputs import make_out, output_paths
from edgeseg.infer.pipeline import (
    Clock,
    InferConfig,
    Plan,
    load_runners,
    new_run,
    open_bundle,
    plan,
    segment,
    summary,
)
from edgeseg.progress import progress_bar


class ReplicaOutputs:
    """What stands for the ledger in a replica: a path the driver did not clear for replacing must still be free
    (a file that appeared since is never overwritten); each written case is recorded in its sidecar."""

    def __init__(self, folder: Path, run: dict):
        self.sidecars, self.replaceable, self.written = CaseSidecars(folder, run), set(), {}

    def check_free(self, paths: dict[str, Path], force: bool, resume: bool = False) -> None:
        for path in paths.values():
            if (path.exists() or path.is_symlink()) and path.name not in self.replaceable:
                raise EdgesegError(f"{path}: appeared while the run was going on; not overwritten")

    def begin(self, item: InputItem, paths: dict[str, Path]) -> None:
        self.sidecars.begin(item, paths)

    def seal(self, item: InputItem, path: Path, tmp: Path) -> None:
        self.sidecars.seal(item, path, tmp)

    def record(self, item: InputItem, paths: dict[str, Path]) -> None:
        self.written[item.case_id] = self.sidecars.done(item, paths)


class Replica:
    """A Ray Data actor: one model replica. ``CONFIG`` (set on a subclass by :func:`_replica_class`) holds the
    run's :class:`InferConfig` fields, the artifact chosen by the driver and the bundle's manifest digest."""

    CONFIG: dict = {}

    def __init__(self):
        cfg = InferConfig(**self.CONFIG["infer"])
        self.spec, layout, artifact, _, digest = open_bundle(cfg)  # verified again, on this node
        if digest != self.CONFIG["manifest_sha256"]:
            raise EdgesegError(f"{cfg.bundle} on {socket.gethostname()} is not the bundle the run was started with")
        self.clock = Clock()
        self.runner, end_to_end, self.load_seconds = load_runners(cfg, artifact, self.clock)
        self.outputs = ReplicaOutputs(cfg.out, {"bundle": str(cfg.bundle), "manifest_sha256": digest,
                                                "artifact": artifact.name})
        self.run = new_run(cfg, self.spec, layout, self.outputs, self.clock, end_to_end)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        items = [InputItem(case, [Path(p) for p in json.loads(paths)], kind)
                 for case, paths, kind in zip(batch["case_id"], batch["paths"], batch["kind"])]
        self.outputs.replaceable = {name for names in batch["replaceable"] for name in json.loads(names)}
        before, calls_before = asdict(self.clock), len(self.clock.calls)
        failed: list[dict] = []
        t0 = time.time()
        segment(self.run, self.runner, items, failed, show_progress=False)
        t1 = time.time()
        errors = {f["input"]: f["error"] for f in failed}
        # the batch's share of the replica's clock, on the batch's first row
        stages = {k: v - before[k] for k, v in asdict(self.clock).items() if isinstance(v, (int, float))}
        stages["calls"] = self.clock.calls[calls_before:]
        rows = {"case_id": [], "error": [], "records": [], "replica": [], "start": [], "end": [], "clock": []}
        for n, item in enumerate(items):
            rows["case_id"].append(item.case_id)
            rows["error"].append(errors.get(item.source, ""))
            rows["records"].append(json.dumps(self.outputs.written.pop(item.case_id, [])))
            rows["replica"].append(self.name)
            rows["start"].append(t0)
            rows["end"].append(t1)
            rows["clock"].append(json.dumps({**stages, "load_seconds": self.load_seconds} if n == 0 else {}))
        return rows


def _replica_class(config: dict) -> type:
    """A :class:`Replica` carrying ``config`` in its class (shipped with the class, not through the object store)."""
    return type("EdgesegReplica", (Replica,), {"CONFIG": config})


def _task_images(cfg: InferConfig, images: int) -> int:
    """Images per Ray task: whole model batches, enough that Ray's cost per task (≈ 50 ms here) is small against
    the work, few enough that every replica gets several tasks; at most 64."""
    per_replica = math.ceil(images / (cfg.replicas * 4))
    return max(1, math.ceil(min(64, per_replica) / cfg.batch_size)) * cfg.batch_size


def _absolute(cfg: InferConfig) -> InferConfig:
    """Every path absolute: a replica's working folder is not the driver's. Links are kept (an input's name, a
    link's, names its outputs, as in local infer)."""
    return replace(cfg, bundle=cfg.bundle.absolute(), out=cfg.out.absolute(), inputs=[p.absolute() for p in cfg.inputs],
                   engine_cache=cfg.engine_cache.absolute() if cfg.engine_cache else None)


def _rows(cfg: InferConfig, planned: Plan) -> list[dict]:
    rows = []
    for item in planned.items:
        paths = output_paths(cfg.out, item.case_id, item.kind, cfg.probabilities, cfg.overlay)
        replaceable = [p.name for p in paths.values() if p.exists()]  # the driver's check allowed replacing these
        rows.append({"case_id": item.case_id, "paths": json.dumps([str(p) for p in item.paths]), "kind": item.kind,
                     "replaceable": json.dumps(replaceable)})
    return rows


class _Gather:
    """The driver's side: ledger records, failures, the replicas' clocks and throughput, as rows arrive."""

    def __init__(self, planned: Plan):
        self.planned, self.clock, self.done, self.replicas, self.loads = planned, Clock(), [], {}, []
        self.sources = {item.case_id: item.source for item in planned.items}
        self.driver_seconds = 0.0  # the driver's own work per row (ledger append, sidecar removal)
        self.started = time.time()  # the pipeline's start (wall clock: replicas report theirs)

    def add(self, batch: dict) -> int:
        """Take in a batch of result rows (one ledger write for all of them); returns how many rows."""
        t0 = time.perf_counter()
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        records, done = [], []
        for row in rows:
            if written := self._row(row):
                records += written
                done.append(row["case_id"])
        if records:
            self.planned.ledger.append(records)  # then the sidecars go: a kill between leaves them to absorb
        for case in done:
            self.planned.ledger.sidecars.clear(case)
        self.done += done
        self.driver_seconds += time.perf_counter() - t0
        return len(rows)

    def _row(self, row: dict) -> list[dict]:
        """One case's result: its ledger records ([] when it failed, recorded as a failure)."""
        case = str(row["case_id"])
        records = json.loads(row["records"])
        if row["error"] or not records:
            self.planned.failed.append({"input": self.sources[case], "error": str(row["error"]) or "no output written"})
            records = []
        stats = self.replicas.setdefault(str(row["replica"]), {"cases": 0, "batches": {}})
        stats["cases"] += 1
        stats["batches"][(float(row["start"]), float(row["end"]))] = None
        clock = json.loads(row["clock"])
        if clock:
            self.loads.append(clock.pop("load_seconds"))
            self.clock.calls += [tuple(c) for c in clock.pop("calls")]
            for key, value in clock.items():
                setattr(self.clock, key, getattr(self.clock, key) + value)
        return records

    def ray_summary(self, cfg: InferConfig, pipeline_seconds: float) -> dict:
        """Throughput in total and per replica (images per busy second), each replica's start-up (from the
        pipeline's start to its first batch: actor start, bundle verification, model load; wall clocks of other
        nodes must be in sync) and the steady overhead: replica time between its batches, per image."""
        per_replica, gaps, startups = {}, 0.0, []
        for name, stats in sorted(self.replicas.items()):
            batches = sorted(stats["batches"])
            busy = sum(end - start for start, end in batches)
            gaps += max(0.0, (batches[-1][1] - batches[0][0]) - busy)
            startups.append(max(0.0, batches[0][0] - self.started))
            per_replica[name] = {"cases": stats["cases"], "batches": len(batches), "busy_seconds": round(busy, 3),
                                 "startup_seconds": round(startups[-1], 3),
                                 "images_per_second": round(stats["cases"] / busy, 2) if busy > 0 else None}
        images = sum(s["cases"] for s in self.replicas.values())
        return {"address": str(cfg.ray), "replicas": cfg.replicas, "replicas_seen": len(self.replicas),
                "threads_per_replica": cfg.threads, "pipeline_seconds": round(pipeline_seconds, 3),
                "images_per_second": round(images / pipeline_seconds, 2) if pipeline_seconds > 0 else None,
                "per_replica": per_replica,
                "startup_seconds": round(float(np.median(startups)), 3) if startups else None,
                "overhead_seconds_per_image": round(gaps / images, 4) if images else None,
                # what bounds a cluster's throughput from the driver's side: 1 / this images/s
                "driver_seconds_per_image": round(self.driver_seconds / images, 6) if images else None}


def run_infer_ray(cfg: InferConfig) -> dict:
    """:func:`edgeseg.infer.run_infer` on Ray (``cfg.ray``: "auto", "local" or an address); the summary of local
    `infer` plus a ``ray`` section (throughput per replica and in total, Ray's overhead per image)."""
    if cfg.replicas < 1:
        raise UsageError("--replicas must be ≥ 1")
    cfg = _absolute(replace(cfg, threads=cfg.threads or 1))
    start = time.perf_counter()
    with output_lock(cfg.out) as lock:
        planned, gather, seconds = _run_on_ray(cfg, lock)
    order = {item.case_id: n for n, item in enumerate(planned.items)}
    result = summary(cfg, planned, sorted(gather.done, key=order.get), gather.clock,
                     max(gather.loads, default=0.0), start)
    return {**result, "ray": gather.ray_summary(cfg, seconds)}


def _run_on_ray(cfg: InferConfig, lock) -> tuple[Plan, _Gather, float]:
    """Plan, then run the replicas over the inputs: ``(plan, what they returned, seconds of the pipeline)``."""
    planned = plan(cfg)
    gather, pipeline_seconds = _Gather(planned), 0.0
    if planned.items:
        make_out(cfg.out)
        lock()
        config = {"infer": {**{k: v for k, v in asdict(cfg).items() if k != "ray"}, "artifact": planned.artifact.name},
                  "manifest_sha256": planned.ledger.run["manifest_sha256"]}
        with connected(cfg.ray) as ray:
            t0, gather.started = time.perf_counter(), time.time()
            dataset = ray.data.from_items(_rows(cfg, planned)).map_batches(
                _replica_class(config), batch_size=_task_images(cfg, len(planned.items)), batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=cfg.replicas), num_cpus=cfg.threads)
            try:
                with progress_bar() as bar:
                    task = bar.add_task("infer (ray)", total=len(planned.items), info="")
                    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                        bar.update(task, advance=gather.add(batch), info=f"{len(gather.replicas)} replica(s)")
            except Exception as exc:  # a replica that could not start, a lost node: one line, not Ray's trace
                if isinstance(exc, EdgesegError):
                    raise
                raise ray_failure(exc) from None
            pipeline_seconds = time.perf_counter() - t0
    return planned, gather, pipeline_seconds
