"""The records of a bench result (``benchmarks/SCHEMA.md``): one entry per artifact or baseline — its role, status,
accuracy, latency, size —, the fixed workload's timing, and what was asked for and not measured."""
from __future__ import annotations

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError
from edgeseg.targets import load_profile

_LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "batch", "warmup", "repeats", "throughput_per_s",
                 "round_p50_ms")


def describe(artifact: Artifact) -> str:
    """What an artifact is, for a reader: its profile's description."""
    if artifact.runtime == "torch" and artifact.precision == "fp32":
        return "FP32 model, PyTorch eager (the reference)"
    try:
        return load_profile(artifact.profile).description if artifact.profile else artifact.name
    except EdgesegError:
        return artifact.profile or artifact.name


def accuracy_record(scores: dict | None, n_cases: int) -> dict | None:
    """An entry's ``accuracy`` from :func:`edgeseg.evaluation.compare_predictors` scores."""
    if scores is None:
        return None
    worst = {lab: {"case": c, "delta": d} for lab, (c, d) in scores["worst"].items()} if scores["worst"] else None
    return {"cases": n_cases, "mean": scores["mean"], "hd95_undefined": scores["hd95_undefined"],
            "drift": scores["drift_ci95"], "agreement": scores["agreement"], "worst_case": worst,
            "structure_changes": scores["structure_changes"], "per_case": scores["cases"]}


def latency_record(lat: dict | None) -> dict | None:
    """An entry's ``latency`` from one :func:`edgeseg.benchmark.isolated.measure_isolated` summary (None if it failed)."""
    if not lat or "error" in lat:
        return None
    out = {"batch_1": {k: lat[k] for k in _LATENCY_KEYS}, **lat.get("batches", {})}
    return {**out, "cold_start_s": lat["load_seconds"], "peak_rss_mb": lat["peak_rss_mb"], "rounds": lat["rounds"]}


def workload_record(latency: dict) -> dict | None:
    """The fixed workload's timing in this run: ONNX Runtime's as ``latency``, every runtime's in
    ``by_runtime`` (null without latency or when the ONNX Runtime worker failed)."""
    from edgeseg.benchmark.workload import WORKLOAD_NAME, workload_key, workload_runtimes

    lat = latency_record(latency.get(WORKLOAD_NAME))
    if not lat:
        return None
    by_runtime = {r: {"latency": {"batch_1": t["batch_1"]}} for r in workload_runtimes()
                  if (t := latency_record(latency.get(workload_key(r))))}
    return {"name": WORKLOAD_NAME, "runtime": "onnxruntime", "latency": {"batch_1": lat["batch_1"]},
            "by_runtime": by_runtime}


def _role(artifact: Artifact, reference: str) -> str:
    if artifact.name == reference:
        return "reference"
    return "baseline" if artifact.recorded.get("origin") == "baseline" or artifact.precision == "fp32" else "candidate"


def _size(artifact: Artifact) -> int | None:
    if artifact.hashes:
        return sum(h["bytes"] for role, h in artifact.hashes.items() if role in artifact.model_files())
    files = [artifact.root / f for f in artifact.model_files().values()] if artifact.root else []
    return sum(f.stat().st_size for f in files) if files and all(f.is_file() for f in files) else None


def artifact_entry(artifact, reference, runners, states, scores, latency, n_cases, counts: dict) -> dict:
    """One artifact's record in the result; ``states`` holds ``(status, notes)`` of those not fully measured,
    ``counts`` the bundle model's final ``params`` and ``macs``."""
    name, extra = artifact.name, artifact.recorded
    status, notes = states.get(name, ("measured", []))
    notes = list(notes)
    lat = latency.get(name)
    if lat and "error" in lat:
        notes.append(f"latency not measured: {lat['error']}")
    runner = runners.get(name)
    same_model = not extra.get("external")  # baselines other than --baseline-checkpoint run the bundle's model
    return {"name": name, "origin": extra.get("origin", "bundle"), "role": _role(artifact, reference),
            "runtime": artifact.runtime, "precision": artifact.precision, "profile": artifact.profile or None,
            "device": artifact.device, "description": extra.get("description", ""),
            "executed_precision": getattr(runner, "executed_precision", None),
            "status": status, "notes": notes,
            "size_bytes": _size(artifact),
            "params": counts["params"] if same_model else None, "macs": counts["macs"] if same_model else None,
            "accuracy": accuracy_record(scores.get(name), n_cases) if name in runners else None,
            "latency": latency_record(lat), "end_to_end": (lat or {}).get("end_to_end"),
            "ratios": {"model_speedup_vs_reference": None, "e2e_speedup_vs_reference": None}}


def incomplete(entries: list[dict], latency_asked: bool) -> list[dict]:
    """``[{name, reason}]``: what the run was asked to measure and did not (an artifact or baseline that failed
    to load, build or run, or whose latency failed); ``edgeseg bench`` then exits non-zero."""
    out = []
    for e in entries:
        if e["status"] == "not_measured":
            out.append({"name": e["name"], "reason": (e["notes"] or ["not measured"])[0]})
        elif latency_asked and e["status"] == "measured" and e["latency"] is None:
            reason = next((n for n in e["notes"] if n.startswith("latency not measured")), "latency not measured")
            out.append({"name": e["name"], "reason": reason})
    return out
