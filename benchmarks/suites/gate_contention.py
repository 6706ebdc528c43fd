"""The CI gate's latency normalisation on a machine that is busy elsewhere.

    python benchmarks/suites/gate_contention.py BUNDLE --data DATASET --loads 0,0.3,0.6 --out DIR

Benches the bundle once per load level, with a background process keeping one core busy for that fraction of
each 10 ms (0: idle). Per artifact and level it reports the latency change against the idle run three ways:
milliseconds, ÷ the ONNX Runtime workload (the normalisation before per-runtime workloads) and ÷ the workload
on the artifact's own runtime (what `edgeseg gate` divides by now), and the gate's verdict on the loaded run
against a baseline written from the idle run, at each of ``--limits``. One run, one machine: the ratios, not the milliseconds, matter.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

from busy_core import busy  # this folder (run as a script)


def _bench(bundle: Path, data: Path, cases: int, rounds: int, duty: float) -> dict:
    from edgeseg.benchmark.harness import BenchConfig, run_bench

    hog = None
    if duty > 0:
        hog = multiprocessing.Process(target=busy, args=(duty,), daemon=True)
        hog.start()
    try:
        return run_bench(BenchConfig(bundle=bundle, data=data, max_cases=cases, repeats=10 * rounds, rounds=rounds,
                                     batch_size=0, e2e_cases=0, threads=2))
    finally:
        if hog:
            hog.terminate()
            hog.join()


def _ratios(result: dict) -> dict[str, dict[str, float]]:
    workload = result["workload"]
    ort = workload["latency"]["batch_1"]["p50_ms"]
    out = {}
    for a in result["artifacts"]:
        if a["origin"] != "bundle" or not a["latency"]:
            continue
        p50 = a["latency"]["batch_1"]["p50_ms"]
        own = workload["by_runtime"].get(a["runtime"], workload)["latency"]["batch_1"]["p50_ms"]
        out[a["name"]] = {"ms": p50, "per_onnxruntime_workload": p50 / ort, "per_own_workload": p50 / own}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--loads", default="0,0.3,0.6")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--limits", default="0.1,0.2", help="latency limits to give the gate's verdict at")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from edgeseg.gating import GateLimits, make_baseline, run_gate, summarize_runs

    args.out.mkdir(parents=True, exist_ok=True)
    loads = [float(x) for x in args.loads.split(",")]
    limits = [float(x) for x in args.limits.split(",")]
    results = {duty: _bench(args.bundle, args.data, args.cases, args.rounds, duty) for duty in loads}
    idle = results[loads[0]]
    baseline = make_baseline([idle], ["idle"])
    rows, idle_ratios = [], _ratios(idle)
    for duty in loads[1:]:
        verdicts = {}
        for limit in limits:
            report = run_gate(summarize_runs([results[duty]]), baseline, GateLimits(max_latency_regression=limit))
            for c in (c for c in report["checks"] if c.check.startswith("latency")):
                verdicts.setdefault(c.artifact, {})[f"{limit:.0%}"] = c.passed
        for name, r in _ratios(results[duty]).items():
            base = idle_ratios[name]
            rows.append({"load": duty, "artifact": name,
                         **{f"change_{k}": r[k] / base[k] - 1 for k in r}, "gate_passed": verdicts.get(name, {})})
    summary = {"bundle": str(args.bundle), "loads": loads, "rows": rows,
               "device": idle["device"]["cpu"]["model"], "threads": 2, "rounds": args.rounds}
    (args.out / "gate_contention.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["| load (one core) | artifact | Δ ms | Δ ÷ ORT workload | Δ ÷ own-runtime workload | "
             + " | ".join(f"gate {x:.0%}" for x in limits) + " |", "|---" * (5 + len(limits)) + "|"]
    lines += [f"| {r['load']:.0%} | {r['artifact']} | {r['change_ms']:+.1%} | {r['change_per_onnxruntime_workload']:+.1%} "
              f"| {r['change_per_own_workload']:+.1%} | "
              + " | ".join("pass" if r["gate_passed"].get(f"{x:.0%}") else "FAIL" for x in limits) + " |" for r in rows]
    (args.out / "gate_contention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
