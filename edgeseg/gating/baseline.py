"""What the gate compares: bench results reduced to per-artifact numbers (medians over repeated runs, with
the per-round values their noise is estimated from), the device class they were measured on, and the baseline file that stores them.

Latency is kept three ways for each of p50/p90: absolute milliseconds, divided by the FP32 reference's
latency in the same run, and divided by the fixed workload's (:mod:`edgeseg.benchmark.workload`) on the
artifact's own runtime in the same run.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np

from edgeseg.benchmark.schema import read_document
from edgeseg.data.io import atomic_write
from edgeseg.errors import EdgesegError
from edgeseg.gating.baseline_schema import BASELINE_SCHEMA, BASELINE_VERSION, MODES, check_baseline
from edgeseg.util import slug

# Rounds per side the gate judges latency from. The band's σ is a median absolute deviation over the rounds;
# with normal round-to-round noise and z = 3, the band alone falsely flags an unchanged model in 2.9 % (2 rounds),
# 6.6 % (3), 2.7 % (5) and 1.4 % (6) of comparisons, and the 10th percentile of σ̂ is 0.13 σ (2 rounds) against
# 0.37 σ (6): docs/gate.md, "Rounds".
MIN_ROUNDS = 6


def device_class(result: dict) -> str:
    """A coarse machine class results are comparable within: ``cpu-<arch>-<INT8 ISA tier>-<threads>t``,
    ``gpu-<name>`` when CUDA artifacts were timed, ``jetson-<model>`` on a Jetson; on a fleet (``bench --ray``) the
    class the node advertised (``edgeseg-device:<class>``), which its operator declared comparable."""
    device = result["device"]
    if isinstance(device.get("fleet"), dict) and isinstance(device["fleet"].get("device_class"), str):
        return device["fleet"]["device_class"]
    if device.get("jetson"):
        return f"jetson-{slug(device['jetson'].get('model') or 'unknown')}"
    timed_cuda = any(a.get("device") == "cuda" and a.get("latency") for a in result["artifacts"])
    if device.get("gpu") and timed_cuda:
        return f"gpu-{slug(device['gpu'].get('name', 'nvidia'))}"
    isa = set(device["cpu"].get("isa", []))
    tier = next((name for name, flag in (("amx", "amx_int8"), ("avx512vnni", "avx512_vnni"), ("avxvnni", "avx_vnni"),
                                          ("avx2", "avx2"), ("neon-dot", "asimddp"), ("neon", "asimd")) if flag in isa), "base")
    threads = result["settings"].get("threads") or device["cpu"].get("usable_cores")
    return f"cpu-{device['cpu']['arch']}-{tier}-{threads}t"


def relative_sigma(values: list[float]) -> float:
    """Robust relative standard deviation of timings: 1.4826 × median absolute deviation / median (0 for one
    value); one outlying round barely moves it."""
    if len(values) < 2:
        return 0.0
    med = float(np.median(values))
    return float(1.4826 * np.median(np.abs(np.asarray(values) - med)) / med) if med > 0 else 0.0


def _timing(entry: dict | None, metric: str) -> tuple[float, list[float]] | None:
    """(metric in ms, the per-round medians) of an artifact or workload entry, if timed."""
    lat = ((entry or {}).get("latency") or {}).get("batch_1")
    if not lat:
        return None
    value, rounds = float(lat[f"{metric}_ms"]), [float(r) for r in lat.get("round_p50_ms") or []]
    if not all(math.isfinite(v) and v > 0 for v in (value, *rounds)):  # a divisor below: 0 ms is no measurement
        raise EdgesegError(f"{(entry or {}).get('name', 'workload')}: latency {metric} {value} ms (rounds {rounds[:4]}) "
                           "is not a timing; the result file is damaged or was edited")
    return value, rounds


def _run_numbers(result: dict) -> dict[str, dict]:
    """Per artifact of one bench result: latency in every mode (value, per-round values), accuracy, status."""
    by_name = {a["name"]: a for a in result["artifacts"]}
    reference = by_name[result["reference"]]
    workload = result.get("workload") or {}
    out = {}
    for a in result["artifacts"]:
        if a["origin"] != "bundle":
            continue  # comparison points built by bench, not what is deployed
        acc = a.get("accuracy") or {}
        entry = {"status": a["status"], "runtime": a["runtime"], "precision": a["precision"], "role": a["role"],
                 "dice": {k: v["dice"] for k, v in acc["mean"].items()} if acc.get("mean") else None,
                 "agreement": acc.get("agreement"),
                 "vanished": sorted(f"{c['case']}:{c['label']}" for c in acc.get("structure_changes") or []
                                    if c["change"] == "vanished"),
                 "latency": {}}
        # the workload on the artifact's own runtime where it was timed (results before it: ONNX Runtime's)
        own_workload = (workload.get("by_runtime") or {}).get(a["runtime"])
        entry["workload_runtime"] = a["runtime"] if own_workload else "onnxruntime"
        sibling = _runtime_fp32(result, a)
        for metric in ("p50", "p90"):
            own = _timing(a, metric)
            if own is None:
                continue
            modes = {"absolute": own}
            for mode, denominator in (("reference", reference), ("workload", own_workload or workload),
                                      ("runtime_fp32", sibling)):
                base = _timing(denominator, metric) if denominator is not None else None
                if base and not (mode == "reference" and a is reference):
                    # per round, the two were timed back to back: their ratio cancels what drifts between rounds
                    modes[mode] = (own[0] / base[0], [x / y for x, y in zip(own[1], base[1])])
            entry["latency"][metric] = modes
        out[a["name"]] = entry
    return out


def _runtime_fp32(result: dict, artifact: dict) -> dict | None:
    """The bundle's measured FP32 artifact on ``artifact``'s runtime and device (None for an FP32 artifact): its
    models respond to a busy machine as this runtime's do, which a fixed workload does not always (docs/gate.md)."""
    if artifact["precision"] == "fp32":
        return None
    return next((b for b in result["artifacts"] if b["origin"] == "bundle" and b["precision"] == "fp32"
                 and b["runtime"] == artifact["runtime"] and b.get("device", "cpu") == artifact.get("device", "cpu")
                 and b["status"] == "measured"), None)


def summarize_runs(results: list[dict]) -> dict:
    """One or more bench results of the same bundle, data and device class → the numbers the gate compares:
    each latency is the median over the runs, with its rounds' values (of every run, each divided by its
    run's value) for the noise estimate. (Rounds record p50s; a p90 gate borrows their spread.)"""
    classes = {device_class(r) for r in results}
    fingerprints = {r["data"]["fingerprint"] for r in results}
    if len(classes) > 1 or len(fingerprints) > 1:
        raise EdgesegError(f"the results to combine differ in device class ({', '.join(sorted(classes))}) or evaluated "
                           "data; gate runs of one machine class on the same cases")
    sources = {(r["bundle"].get("source_checkpoint") or {}).get("sha256") for r in results}
    if len(sources) > 1:
        raise EdgesegError("the results to combine are of bundles made from different checkpoints; combine runs of "
                           "one bundle")
    runs = [_run_numbers(r) for r in results]
    artifacts = {}
    for name in dict.fromkeys(n for run in runs for n in run):
        entries = [run[name] for run in runs if name in run]
        first = entries[0]
        latency = {}
        for metric in ("p50", "p90"):
            latency[metric] = {}
            for mode in MODES:
                pairs = [e["latency"][metric][mode] for e in entries if mode in e["latency"].get(metric, {})
                         and (mode != "workload" or e["workload_runtime"] == first["workload_runtime"])]
                if pairs:
                    value = float(np.median([v for v, _ in pairs]))
                    # every run's rounds scaled to that run's value (rounds time p50; the metric may be p90),
                    # pooled over the runs: the spread holds within-run and run-to-run variation
                    rounds = [v * r / np.median(rs) for v, rs in pairs if rs for r in rs]
                    if len(pairs) > 1 and not rounds:
                        rounds = [v for v, _ in pairs]
                    latency[metric][mode] = {"value": value, "rounds": rounds, "sigma": relative_sigma(rounds),
                                             "runs": len(pairs), "run_values": [v for v, _ in pairs]}
                    if mode == "workload":
                        latency[metric][mode]["runtime"] = first["workload_runtime"]
        artifacts[name] = {**{k: first[k] for k in ("runtime", "precision", "role", "dice", "agreement")},
                           "status": first["status"] if all(e["status"] == first["status"] for e in entries) else
                           "inconsistent", "vanished": sorted({v for e in entries for v in e["vanished"]}),
                           "latency": latency}
    r0 = results[0]
    return {"device_class": classes.pop(), "reference": r0["reference"],
            "workload": (r0.get("workload") or {}).get("name"),
            "data": {"dataset": r0["data"]["dataset"], "split": r0["data"]["split"], "cases": r0["data"]["cases"],
                     "fingerprint": r0["data"]["fingerprint"]},
            "model": {"labels": r0["model"]["labels"], "headline_label": r0["settings"]["headline_label"],
                      "arch": r0["model"].get("arch"), "source_checkpoint": r0["bundle"].get("source_checkpoint")},
            "runs": len(results), "artifacts": artifacts}


def rounds_shortfall(summary: dict, metric: str = "p50") -> dict[str, int]:
    """``{artifact: rounds}`` of the timed artifacts of a summary with fewer than :data:`MIN_ROUNDS` rounds."""
    out = {}
    for name, a in summary["artifacts"].items():
        modes = a["latency"].get(metric) or {}
        n = max((len(m["rounds"]) for m in modes.values()), default=None)
        if n is not None and n < MIN_ROUNDS:
            out[name] = n
    return out


def too_few_rounds(where: str, short: dict[str, int]) -> EdgesegError:
    """The one line refusing to judge (or record) latency from too few rounds."""
    name, n = next(iter(short.items()))
    more = f" and {len(short) - 1} more" if len(short) > 1 else ""
    return EdgesegError(f"{where}: latency of {name}{more} was timed in {n} round(s); the gate needs ≥ {MIN_ROUNDS} "
                        f"rounds per side to tell a slowdown from noise: bench with --rounds {MIN_ROUNDS} (the default), "
                        f"or pass ≥ {-(-MIN_ROUNDS // max(n, 1))} result files of {n} rounds")


def run_to_run_sigma(artifacts: dict) -> dict:
    """``{metric: {mode: {runtime: {"sigma", "dof"}}}}``: the spread between repeated runs' values of the artifacts
    of each runtime — standard deviation of the log values around each artifact's own mean, pooled over the
    runtime's artifacts (``dof`` = runs − 1 summed over them); only where some artifact has ≥ 2 runs."""
    pooled: dict = {}
    for a in artifacts.values():
        for metric, modes in a["latency"].items():
            for mode, entry in modes.items():
                logs = np.log(entry.get("run_values") or [])
                if len(logs) >= 2:
                    acc = pooled.setdefault(metric, {}).setdefault(mode, {}).setdefault(a["runtime"], [0.0, 0])
                    acc[0] += float(((logs - logs.mean()) ** 2).sum())
                    acc[1] += len(logs) - 1
    return {metric: {mode: {rt: {"sigma": (ss / dof) ** 0.5, "dof": dof} for rt, (ss, dof) in runtimes.items()}
                     for mode, runtimes in modes.items()} for metric, modes in pooled.items()}


def make_baseline(results: list[dict], sources: list[str]) -> dict:
    """A baseline file's content from one or more bench results (repeated runs: their run-to-run spread per
    runtime is recorded as ``run_sigma``, the floor of the gate's noise band); refuses latency from fewer than
    :data:`MIN_ROUNDS` rounds."""
    summary = summarize_runs(results)
    if short := rounds_shortfall(summary):
        raise too_few_rounds(f"a baseline from {', '.join(sources)}", short)
    return {"schema": BASELINE_SCHEMA, "schema_version": BASELINE_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "sources": [{"path": s, "created": r["created"], "bundle_manifest_sha256": r["bundle"]["manifest_sha256"],
                         "edgeseg_version": r["edgeseg_version"], "cpu": r["device"]["cpu"]["model"]}
                        for s, r in zip(sources, results)],
            **summary, "run_sigma": run_to_run_sigma(summary["artifacts"])}


def describe_baseline(baseline: dict) -> str:
    """``chest.ckpt (sha256 1a2b3c4d) on Dataset002 val, 8 cases (data 44f5dee1), 3 run(s) on cpu-…-2t,
    2026-11-27``."""
    source = (baseline.get("model") or {}).get("source_checkpoint") or {}
    model = f"{source.get('name', 'unrecorded checkpoint')} (sha256 {str(source.get('sha256', '?'))[:8]})"
    data = baseline["data"]
    return (f"{model} on {data['dataset']} {data.get('split', '?')}, {len(data.get('cases') or [])} cases (data "
            f"{str(data.get('fingerprint', '?'))[:8]}), {baseline.get('runs', '?')} run(s) on "
            f"{baseline.get('device_class', '?')}, {str(baseline.get('created', '?'))[:10]}")


def _other_model_or_data(old: dict, new: dict) -> str | None:
    """Why ``old`` is a baseline of another model or data than ``new`` (None when it is the same one). A baseline
    written before checkpoints were recorded is judged by its data and labels."""
    old_sha = ((old.get("model") or {}).get("source_checkpoint") or {}).get("sha256")
    new_sha = ((new.get("model") or {}).get("source_checkpoint") or {}).get("sha256")
    if old_sha and new_sha and old_sha != new_sha:
        return "another source checkpoint"
    if old["data"].get("fingerprint") != new["data"]["fingerprint"]:
        return "other evaluated data"
    if (old.get("model") or {}).get("labels") != new["model"]["labels"]:
        return "other labels"
    return None


def write_baseline(baseline: dict, path: Path, replace_other: bool = False) -> dict | None:
    """Write ``baseline`` to ``path``; returns the baseline it replaced (None: there was none). Never replaces a
    file that is not an edgeseg gate baseline; a baseline of another model or data only with ``replace_other``."""
    path = Path(path)
    old = None
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_file():
            raise EdgesegError(f"{path}: exists and is not a regular file; edgeseg writes baselines only over its "
                               "own baseline files")
        try:
            old = read_baseline(path)
        except EdgesegError:
            raise EdgesegError(f"{path}: exists and is not an edgeseg gate baseline (of a schema this edgeseg reads); "
                               "not replaced, whatever the flags: choose another --baseline/--baseline-dir") from None
        why = _other_model_or_data(old, baseline)
        if why and not replace_other:
            raise EdgesegError(f"{path} holds the baseline of {why} ({describe_baseline(old)}), not of these results "
                               f"({describe_baseline(baseline)}); not replaced: pass --replace-baseline to replace it, "
                               "or write to another --baseline FILE / --baseline-dir")
    text = json.dumps(baseline, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return old


def read_baseline(path: Path) -> dict:
    """A baseline file, checked (:func:`~edgeseg.gating.baseline_schema.check_baseline`); refuses anything else,
    and a schema version other than the one this edgeseg reads."""
    return check_baseline(read_document(path, "baseline"), path)
