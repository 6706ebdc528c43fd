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
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import EdgesegError

# PyTorch's OpenMP threads wait passively here, as a deployment sharing the CPU would configure them
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def measure_isolated(bundle_dir: Path, artifacts: list[dict], sample: np.ndarray, threads: dict[str, int | None],
                     repeats: int = 30, rounds: int = 2, warmup: int = 5, timeout: float = 600) -> dict[str, dict]:
    """``{artifact name: latency summary + load_seconds}`` for each artifact, each timed in its own process."""
    times: dict[str, list[float]] = {a["name"]: [] for a in artifacts}
    loads: dict[str, list[float]] = {a["name"]: [] for a in artifacts}
    rss: dict[str, list[float]] = {a["name"]: [] for a in artifacts}
    per_round = max(1, repeats // rounds)
    with tempfile.TemporaryDirectory(prefix="edgeseg-lat-") as tmp:
        sample_path = Path(tmp) / "sample.npy"
        np.save(sample_path, np.ascontiguousarray(sample, dtype=np.float32))
        for _ in range(rounds):
            for artifact in artifacts:
                job = {"bundle": str(artifact.get("root", bundle_dir)), "artifact": artifact, "threads": threads.get(artifact["name"]),
                       "repeats": per_round, "warmup": warmup, "input": str(sample_path)}
                result = _run_worker(job, timeout)
                times[artifact["name"]] += result["times_ms"]
                loads[artifact["name"]].append(result["load_seconds"])
                rss[artifact["name"]].append(result["peak_rss_mb"])
    return {name: {**summarize(t, sample.shape[0], warmup), "load_seconds": float(np.median(loads[name])),
                   "peak_rss_mb": float(max(rss[name])),
                   "process": "one per artifact and round", "rounds": rounds} for name, t in times.items()}


def summarize(times_ms: list[float], batch: int, warmup: int) -> dict[str, float]:
    t = np.asarray(times_ms)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "min_ms": float(t.min()),
            "batch": int(batch), "warmup": warmup, "repeats": len(t)}


def _run_worker(job: dict, timeout: float) -> dict:
    env = {**os.environ, **WORKER_ENV}
    proc = subprocess.run([sys.executable, "-m", "edgeseg.bench.isolated", json.dumps(job)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgesegError(f"latency worker for {job['artifact']['name']} failed: {tail[:300]}")
    return json.loads(lines[-1])


def _worker(job: dict) -> dict:
    from ..targets import get_target

    batch = np.load(job["input"])
    start = time.perf_counter()
    runner = get_target(job["artifact"]["runtime"]).load(Path(job["bundle"]), job["artifact"], job["threads"])
    runner(batch)
    load_seconds = time.perf_counter() - start
    for _ in range(job["warmup"]):
        runner(batch)
    out = []
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        runner(batch)
        out.append((time.perf_counter() - t0) * 1e3)
    import resource

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the whole worker process
    return {"times_ms": out, "load_seconds": load_seconds, "peak_rss_mb": peak_kib / 1024,
            "executed_precision": runner.executed_precision}


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
