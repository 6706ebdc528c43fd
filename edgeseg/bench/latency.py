"""Model-only latency: warm-up, then timed runs; percentiles in milliseconds."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def measure_latency(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, warmup: int = 5,
                    repeats: int = 30) -> dict[str, float]:
    """p50/p90/p99/mean/min of ``run(batch)`` in ms after ``warmup`` untimed runs."""
    for _ in range(warmup):
        run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1e3)
    return summarize(times, batch.shape[0], warmup)

def measure_interleaved(runners: dict[str, Callable[[np.ndarray], np.ndarray]], batch: np.ndarray,
                        repeats: int = 30, rounds: int = 3, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Latency of several runners, interleaved in ``rounds`` so that machine noise hits all of them alike."""
    per_round = max(1, repeats // rounds)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for name, run in runners.items():
        for _ in range(warmup):
            run(batch)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                run(batch)
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: summarize(t, batch.shape[0], warmup) for name, t in samples.items()}


def summarize(times_ms: list[float], batch: int, warmup: int) -> dict[str, float]:
    t = np.asarray(times_ms)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "min_ms": float(t.min()),
            "batch": int(batch), "warmup": warmup, "repeats": len(t)}
