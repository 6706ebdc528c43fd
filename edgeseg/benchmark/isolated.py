"""Latency measured in a fresh process per artifact and round.

Runtimes in one process disturb each other: ONNX Runtime's and OpenMP's spinning threads keep cores busy
after a call returns, so PyTorch eager timed beside ONNX Runtime/OpenVINO sessions ran ~10× slower than
alone on 2 cores. Each worker loads one artifact, times it and exits; rounds alternate the artifacts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError
from edgeseg.housekeeping import work_dir

# PyTorch's OpenMP threads wait passively here, as a deployment sharing the CPU would configure them
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def latency_threads(requested: int | None) -> int:
    """The intra-op threads every artifact is timed with, in ``compress`` and ``bench`` alike: ``--threads``,
    else every core this process may use."""
    if requested:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measure_isolated(bundle_dir: Path, artifacts: list[Artifact], sample: np.ndarray, threads: dict[str, int | None],
                     repeats: int = 30, rounds: int = 2, warmup: int = 5, timeout: float = 900,
                     batch_sizes: tuple[int, ...] = (), end_to_end: dict | None = None, progress=None) -> dict[str, dict]:
    """``{artifact name: batch-1 latency summary + load_seconds + peak_rss_mb}`` for each artifact, each timed
    in its own process per round (``{"error": reason}`` for one whose worker failed). ``batch_sizes`` adds
    ``"batches": {"batch_<B>": summary}`` (the sample repeated B times); ``end_to_end`` (``{"data", "cases", "preprocessing", "spatial_dims"}``) adds
    ``"end_to_end"``: read + preprocess + infer + postprocess + write per case, timed in every round (not for
    an artifact marked ``model_only``). ``round_p50_ms``: the batch-1 median of each round (run-to-run spread);
    the end-to-end summary has its own (the median case of each round)."""
    names = [a.name for a in artifacts]
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in (1, *batch_sizes)} for n in names}
    loads: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    e2e: dict[str, list[dict]] = {n: [] for n in names}
    round_p50: dict[str, list[float]] = {n: [] for n in names}
    per_round = max(1, repeats // rounds)
    with work_dir("edgeseg-lat") as tmp:
        inputs = {}
        for b in (1, *batch_sizes):
            inputs[b] = str(Path(tmp) / f"sample_b{b}.npy")
            np.save(inputs[b], np.ascontiguousarray(np.repeat(sample[:1], b, axis=0), dtype=np.float32))
        failed: dict[str, str] = {}
        for r in range(rounds):
            for artifact in (a for a in artifacts if a.name not in failed):
                job = {"bundle": str(artifact.folder(bundle_dir)), "artifact": artifact.to_dict(),
                       "from_bundle": artifact.root is None,
                       "threads": threads.get(artifact.name), "repeats": per_round, "warmup": warmup,
                       "inputs": inputs,
                       "end_to_end": None if artifact.recorded.get("model_only") else end_to_end,
                       "out_dir": str(Path(tmp) / "masks")}
                try:
                    result = _run_worker(job, timeout)
                except (EdgesegError, subprocess.TimeoutExpired) as exc:  # one artifact failing: measure the others
                    failed[artifact.name] = str(exc)
                    continue
                finally:
                    if progress:
                        progress()
                name = artifact.name
                for b, t in result["times_ms"].items():
                    times[name][int(b)] += t
                round_p50[name].append(float(np.median(result["times_ms"]["1"])))
                loads[name].append(result["load_seconds"])
                rss[name].append(result["peak_rss_mb"])
                if result.get("end_to_end"):
                    e2e[name].append(result["end_to_end"])
    out = {name: {"error": reason} for name, reason in failed.items()}
    for name in (n for n in names if n not in failed):
        out[name] = {**summarize(times[name][1], 1, warmup), "load_seconds": float(np.median(loads[name])),
                     "peak_rss_mb": float(max(rss[name])), "process": "one per artifact and round", "rounds": rounds,
                     "round_p50_ms": round_p50[name]}
        if batch_sizes:
            out[name]["batches"] = {f"batch_{b}": summarize(times[name][b], b, _batch_warmup(warmup)) for b in batch_sizes}
        if e2e[name]:
            out[name]["end_to_end"] = summarize_end_to_end(e2e[name])
    return out


def summarize(times_ms: list[float], batch: int, warmup: int) -> dict[str, float]:
    t = np.asarray(times_ms)
    p50 = float(np.percentile(t, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "min_ms": float(t.min()),
            "batch": int(batch), "warmup": warmup, "repeats": len(t), "throughput_per_s": batch * 1e3 / p50}


def summarize_end_to_end(rounds: list[list[dict]]) -> dict:
    """p50/p90/mean of the per-case totals of every round, the mean time per stage and ``round_p50_ms``."""
    rows = [r for one in rounds for r in one]
    total = np.asarray([r["total"] for r in rows])
    stages = {k: float(np.mean([r[k] for r in rows])) for k in ("read", "preprocess_postprocess", "infer", "write")}
    return {"cases": len({r["case"] for r in rows}), "rounds": len(rounds),
            "pre_post_in_graph": sum(bool(r.get("in_graph")) for r in rows) / len(rows), "p50_ms": float(np.percentile(total, 50)),
            "p90_ms": float(np.percentile(total, 90)), "mean_ms": float(total.mean()), "stages_ms": stages, "infer_fraction": stages["infer"] / float(total.mean()),
            "round_p50_ms": [float(np.median([r["total"] for r in one])) for one in rounds]}


def _run_worker(job: dict, timeout: float) -> dict:
    env = {**os.environ, **WORKER_ENV}
    proc = subprocess.run([sys.executable, "-m", "edgeseg.benchmark.isolated", json.dumps(job)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgesegError(f"latency worker for {job['artifact']['name']} failed: {tail[:300]}")
    return json.loads(lines[-1])


def peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux: ``VmHWM`` of its own address space — ``ru_maxrss`` would
    report at least the parent's RSS at fork time, since Linux carries it across ``execve``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _batch_warmup(warmup: int) -> int:
    return max(1, warmup // 2)


def _time_calls(runner, batch: np.ndarray, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        runner(batch)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner(batch)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _end_to_end(runner, job: dict, out_dir: Path, graph=None) -> list[dict]:
    """Per case: read the image file(s), preprocess, infer, postprocess, write the mask; the first case is
    run once untimed first (caches, lazy allocations). With the artifact's end-to-end ``graph``, an image stored
    as uint8 goes through it as read (pre/post inside: ``infer`` is the graph's time), as `edgeseg infer` does."""
    from edgeseg.data.io import write_array
    from edgeseg.data.nnunet import NnUNetDataset
    from edgeseg.data.preprocessing import PreprocessSpec
    from edgeseg.inference import predict_mask

    dataset = NnUNetDataset(job["data"], require_labels=False)
    spec = PreprocessSpec.from_dict(job["preprocessing"])
    infer_ms = [0.0]

    def timed_runner(batch, model=runner):
        t0 = time.perf_counter()
        out = model(batch)
        infer_ms[0] += (time.perf_counter() - t0) * 1e3
        return out

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cid in enumerate([job["cases"][0], *job["cases"]]):
        infer_ms[0] = 0.0
        t0 = time.perf_counter()
        image, geometry = dataset.load_image(cid, as_stored=graph is not None)
        t1 = time.perf_counter()
        if graph is not None and image.dtype == np.uint8 and image.ndim == 3:
            mask = timed_runner(np.ascontiguousarray(np.moveaxis(image, 0, -1)), graph)
        else:
            mask = predict_mask(timed_runner, image.astype(np.float32, copy=False), spec, job["spatial_dims"],
                                spacing=geometry.spacing)
        t2 = time.perf_counter()
        write_array(out_dir / f"{cid}{'.nii.gz' if mask.ndim == 3 else '.png'}", mask, geometry)
        t3 = time.perf_counter()
        if i:
            predict = (t2 - t1) * 1e3
            rows.append({"case": cid, "in_graph": graph is not None and image.dtype == np.uint8,
                         "read": (t1 - t0) * 1e3, "infer": infer_ms[0],
                         "preprocess_postprocess": predict - infer_ms[0], "write": (t3 - t2) * 1e3,
                         "total": (t3 - t0) * 1e3})
    return rows


def _worker(job: dict) -> dict:
    from edgeseg.targets import get_target

    inputs = {int(b): np.load(path) for b, path in job["inputs"].items()}
    start = time.perf_counter()
    folder = Path(job["bundle"])
    artifact = Artifact.from_dict(job["artifact"], root=None if job["from_bundle"] else folder)
    if artifact.recorded.get("workload"):
        from edgeseg.benchmark.workload import load_workload

        runner = load_workload(folder, artifact.runtime, job["threads"], inputs[min(inputs)].ndim)
    else:
        runner = get_target(artifact.runtime).load(folder, artifact, job["threads"])
    runner(inputs[min(inputs)])
    load_seconds = time.perf_counter() - start
    # larger batches: half the calls (each does B times the work)
    times = {b: _time_calls(runner, batch, job["warmup"] if b == 1 else _batch_warmup(job["warmup"]),
                            job["repeats"] if b == 1 else max(3, job["repeats"] // 2))
             for b, batch in sorted(inputs.items())}
    e2e = None
    if job.get("end_to_end"):
        graph = None
        if not artifact.recorded.get("workload"):
            graph = get_target(artifact.runtime).load_end_to_end(folder, artifact, job["threads"])
        e2e = _end_to_end(runner, job["end_to_end"], Path(job["out_dir"]), graph)
    return {"times_ms": times, "load_seconds": load_seconds, "peak_rss_mb": peak_rss_mb(),
            "executed_precision": runner.executed_precision, "end_to_end": e2e}


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
