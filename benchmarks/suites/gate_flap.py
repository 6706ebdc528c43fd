"""Does `edgeseg gate` flap? N back-to-back bench + gate runs of an unchanged bundle and of the same bundle with
one artifact slowed down ~25 %, on an idle machine and with one core 30 % busy — each run the documented way.

    edgeseg demo        # once: the phantom bundle in edgeseg-demo/ (or pass --bundle/--data)
    python benchmarks/suites/gate_flap.py --n 20 --out benchmarks/results/issueH

What it runs (README "Gate", docs/gate.md):
1. the baseline, once, idle: 3 × `edgeseg bench` then `edgeseg gate R1 R2 R3 --baseline B --update-baseline`;
2. a copy of the bundle whose ONNX Runtime INT8 model carries a side branch of convolutions × 0 added to the
   logits (same masks, more work), its size calibrated to ``--slowdown``: timed in-process first, then checked
   where it counts — an idle bench of the slowed bundle against the baseline, the branch stepped up or down
   until the gate sees 0.8–1.6 × the target;
3. N times, the four conditions interleaved (idle/busy × unchanged/slowed): `edgeseg bench` (the bench flags
   below) and `edgeseg gate RESULT --baseline B` with its default limits — a broken latency limit is confirmed
   by the gate's own second bench run, under the same load.
Each run's exit code is the verdict; the change and band of every artifact are recomputed from the result files
with the library. Runs are appended to ``WORK/runs.jsonl`` as they finish: re-running resumes. The tally
(``gate_flap.json`` + ``gate_flap.md``) is rewritten after every run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

from busy_core import busy  # this folder (run as a script)

CONDITIONS = ("idle", "busy", "idle-slowed", "busy-slowed")
SLOWED = "x86-onnxruntime-int8"  # the artifact the slowdown goes into
MODE_MARK = {"÷ workload": "w ", "÷ FP32 on its runtime": "f "}  # the gate's two denominators (docs/gate.md)


def insert_slow_ops(model_path: Path, layers: int = 6, channels: int = 32) -> None:
    """Add a side branch of convolutions whose result is multiplied by zero and added to the logits: the masks
    stay exactly the same, every inference does more work."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    source, target = graph.input[0].name, graph.output[0].name
    in_channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    for node in graph.node:
        node.output[:] = ["logits_before_slow" if o == target else o for o in node.output]
    rng = np.random.default_rng(0)
    x, nodes = source, []
    for i in range(layers):
        w = rng.standard_normal((channels, in_channels if i == 0 else channels, 3, 3)).astype(np.float32) * 0.01
        graph.initializer.append(numpy_helper.from_array(w, f"slow_w{i}"))
        nodes += [helper.make_node("Conv", [x, f"slow_w{i}"], [f"slow_c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"slow_c{i}"], [f"slow_x{i}"])]
        x = f"slow_x{i}"
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "slow_zero"))
    nodes += [helper.make_node("ReduceMean", [x], ["slow_mean"], keepdims=0),
              helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", ["logits_before_slow", "slow_nothing"], [target])]
    graph.node.extend(nodes)
    onnx.save(model, str(model_path))


def _time_ort(path: Path, shape: tuple, threads: int, calls: int) -> float:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(5):
        session.run(None, x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        session.run(None, x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _copy_bundle(bundle: Path, out: Path, keep_runtimes: set[str]) -> dict:
    """Copy ``bundle`` to ``out`` (this script's own work folder) with only the artifacts of ``keep_runtimes``;
    returns the new manifest (re-hashed on :func:`write_manifest`)."""
    from edgeseg.bundle import read_manifest, write_manifest

    if out.exists():
        shutil.rmtree(out)  # our own copy, made by this script
    shutil.copytree(bundle, out)
    manifest = read_manifest(out)
    for artifact in [a for a in manifest["artifacts"] if a["runtime"] not in keep_runtimes]:
        manifest["artifacts"].remove(artifact)
        for rel in artifact["files"].values():
            (out / rel).unlink()
    return write_manifest(out, manifest)


# side branches (layers, channels), cheapest first: the first conv reads the 1-channel input
BRANCHES = [(1, 1), (1, 2), (2, 2), (1, 4), (2, 4), (3, 4), (4, 4), (4, 8), (6, 8), (4, 16), (6, 16), (6, 32)]


def make_bundles(bundle: Path, work: Path, runtimes: set[str], target: float, threads: int) -> dict:
    """``work/unchanged.bundle`` (the artifacts of ``runtimes`` only) and ``work/slowed.bundle`` (the same with the
    side branch in :data:`SLOWED` of :data:`BRANCHES` whose slowdown is nearest ``target`` — in-process ONNX
    Runtime timing, interleaved, median of 3 passes)."""
    manifest = _copy_bundle(bundle, work / "unchanged.bundle", runtimes)
    artifact = next(a for a in manifest["artifacts"] if a["name"] == SLOWED)
    original = work / "unchanged.bundle" / artifact["files"]["model"]
    shape = (1, manifest["model"]["in_channels"], *manifest["preprocessing"]["size"])
    trials = {}
    for layers, channels in BRANCHES:
        probe = work / "probe.onnx"
        shutil.copy(original, probe)
        insert_slow_ops(probe, layers, channels)
        ratios = [_time_ort(probe, shape, threads, 60) / _time_ort(original, shape, threads, 60) - 1 for _ in range(3)]
        trials[f"{layers}x{channels}"] = sorted(ratios)[1]
        probe.unlink()
        if trials[f"{layers}x{channels}"] >= target:
            break
    # the first branch past the target, or the one before it when that was closer
    tried = list(trials)
    if len(tried) > 1 and abs(trials[tried[-2]] - target) < abs(trials[tried[-1]] - target):
        layers, channels = (int(x) for x in tried[-2].split("x"))
    build_slowed(work, runtimes, layers, channels)
    return {"layers": layers, "channels": channels, "calibrated_slowdown": trials[f"{layers}x{channels}"],
            "trials": trials}


def build_slowed(work: Path, runtimes: set[str], layers: int, channels: int) -> None:
    """``work/slowed.bundle``: ``work/unchanged.bundle`` with the side branch in :data:`SLOWED`."""
    from edgeseg.bundle import read_manifest, write_manifest

    manifest = _copy_bundle(work / "unchanged.bundle", work / "slowed.bundle", runtimes)
    artifact = next(a for a in manifest["artifacts"] if a["name"] == SLOWED)
    insert_slow_ops(work / "slowed.bundle" / artifact["files"]["model"], layers, channels)
    write_manifest(work / "slowed.bundle", read_manifest(work / "slowed.bundle"))


def verify_slowdown(args, slow: dict, runtimes: set[str]) -> dict:
    """What the gate sees, idle: bench the slowed bundle and take :data:`SLOWED`'s change ÷ workload against the
    baseline. In-process timing of a few milliseconds is noisy (a 3-conv branch once read +29.6 % there and
    +10…+17 % in bench), so while the bench change is under 0.8 × the target the next larger branch is built,
    and over 1.6 × the next smaller one (at most 5 benches); every try is recorded."""
    i = BRANCHES.index((slow["layers"], slow["channels"]))
    tries = []
    while True:
        out = args.work / f"verify-slowdown-{len(tries) + 1}.json"
        _bench(args, args.work / "slowed.bundle", out)
        change = _details([out], args.work / "baseline.json")[SLOWED][0]["change"]
        tries.append({"branch": "x".join(map(str, BRANCHES[i])), "bench_change": change})
        print(f"  bench of the slowed bundle, branch {tries[-1]['branch']}: {change:+.1%} ÷ workload", flush=True)
        step = 1 if change < 0.8 * args.slowdown else -1 if change > 1.6 * args.slowdown else 0
        tried = {t["branch"] for t in tries}
        if step == 0 or len(tries) == 5 or not 0 <= i + step < len(BRANCHES) \
                or "x".join(map(str, BRANCHES[i + step])) in tried:
            break
        i += step
        build_slowed(args.work, runtimes, *BRANCHES[i])
    layers, channels = BRANCHES[i]
    return {**slow, "layers": layers, "channels": channels, "verified": tries}


def _bench(args, bundle: Path, out: Path) -> None:
    cmd = ["edgeseg", "bench", str(bundle), "--data", str(args.data), "--cases", str(args.cases), "--threads", "2",
           "--backends", args.backends, "--rounds", str(args.rounds), "--repeats", str(args.repeats),
           "--batch-size", "0", "--e2e-cases", "0", "--out", str(out), "--force"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _details(results: list[Path], baseline: Path) -> dict:
    """Per artifact: change, band, passed of each result on its own (the confirmation run's too)."""
    from edgeseg.benchmark.schema import read_result
    from edgeseg.gating import GateLimits, read_baseline, run_gate, summarize_runs

    base = read_baseline(baseline)
    out = {}
    for i, path in enumerate(results):
        summary = summarize_runs([read_result(path)])
        report = run_gate(summary, base, GateLimits())
        for c in (c for c in report["checks"] if c.check.startswith("latency") and c.current and c.baseline):
            ms = [x["artifacts"][c.artifact]["latency"]["p50"]["absolute"]["value"] for x in (base, summary)]
            out.setdefault(c.artifact, []).append({"change": c.current / c.baseline - 1, "band": c.noise,
                                                   "ms_change": ms[1] / ms[0] - 1, "passed": c.passed,
                                                   "mode": c.check.split("(", 1)[-1].rstrip(")"), "result": i})
    return out


def _one_run(args, condition: str, i: int, baseline: Path) -> dict:
    folder = args.work / condition
    folder.mkdir(parents=True, exist_ok=True)
    result, confirm = folder / f"run{i:02d}.json", folder / f"run{i:02d}.confirm.json"
    confirm.unlink(missing_ok=True)  # written by the gate of an earlier, interrupted attempt of this run
    hog = None
    if condition.startswith("busy"):
        hog = multiprocessing.Process(target=busy, args=(args.load,), daemon=True)
        hog.start()
    start = time.perf_counter()
    try:
        _bench(args, args.work / ("slowed.bundle" if condition.endswith("slowed") else "unchanged.bundle"), result)
        gate = subprocess.run(["edgeseg", "gate", str(result), "--baseline", str(baseline),
                               "--junit", str(folder / f"run{i:02d}.gate.xml")], capture_output=True, text=True)
    finally:
        if hog:
            hog.terminate()
            hog.join()
    if gate.returncode not in (0, 1):
        raise SystemExit(f"{condition} run {i}: edgeseg gate exit {gate.returncode}: {gate.stderr.strip()[-300:]}")
    files = [result, *([confirm] if confirm.is_file() else [])]
    return {"condition": condition, "run": i, "exit": gate.returncode, "failed": gate.returncode == 1,
            "confirmed_with_second_run": confirm.is_file(), "seconds": round(time.perf_counter() - start, 1),
            "artifacts": _details(files, baseline)}


def _tally(rows: list[dict], meta: dict) -> dict:
    by = {}
    for c in CONDITIONS:
        mine = [r for r in rows if r["condition"] == c]
        if mine:
            failed = sum(r["failed"] for r in mine)
            by[c] = {"runs": len(mine), "gate_failed": failed, "confirm_runs": sum(r["confirmed_with_second_run"] for r in mine),
                     "target": "caught ≥ 19 of 20" if c.endswith("slowed") else "false failures ≤ 1 of 20"}
    return {**meta, "conditions": by, "runs": rows}


def _cell(x: dict) -> str:
    return f"{MODE_MARK.get(x.get('mode'), '')}{x['change']:+.1%} ({x['band']:.1%}){'' if x['passed'] else ' ✗'}"


def _markdown(tally: dict) -> str:
    lines = [f"# `edgeseg gate` flap test ({tally['started']})", "", tally["setup"], "",
             "| condition | runs | gate failed | confirmation runs | target |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {v['runs']} | {v['gate_failed']} | {v['confirm_runs']} | {v['target']} |"
              for c, v in tally["conditions"].items()]
    lines += ["", "Per run: exit code (0 pass, 1 fail after the confirmation run), and per artifact the change of its "
              "latency against the baseline and the noise band — `w` ÷ the fixed workload, `f` ÷ the FP32 artifact on "
              "the same runtime, the gate's two denominators — (first run; after `/`: the confirmation run).", "", "| condition | run | exit | " + " | ".join(tally["artifacts"]) + " | s |",
              "|---" * (4 + len(tally["artifacts"])) + "|"]
    for r in tally["runs"]:
        cells = []
        for name in tally["artifacts"]:
            runs = r["artifacts"].get(name) or []
            last = max((x.get("result", 0) for x in runs), default=-1)
            per_result = [[x for x in runs if x.get("result", 0) == i] for i in range(last + 1)]
            cells.append(" / ".join(" · ".join(_cell(x) for x in xs) for xs in per_result))
        lines.append(f"| {r['condition']} | {r['run']} | {r['exit']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("edgeseg-demo/bundle"))
    parser.add_argument("--data", type=Path, default=Path("edgeseg-demo/phantom"))
    parser.add_argument("--n", type=int, default=20, help="runs per condition")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--load", type=float, default=0.3, help="busy share of one core (busy_core.py)")
    parser.add_argument("--slowdown", type=float, default=0.25)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--rounds", type=int, default=6, help="bench default")
    parser.add_argument("--repeats", type=int, default=50, help="bench default")
    parser.add_argument("--work", type=Path, default=Path("runs/gate_flap"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/issueH"))
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle}: no bundle; run `edgeseg demo` first or pass --bundle/--data")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    meta_path, log = args.work / "meta.json", args.work / "runs.jsonl"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    else:
        print("calibrating the slowdown …", flush=True)
        slow = make_bundles(args.bundle, args.work, set(args.backends.split(",")), args.slowdown, 2)
        print(f"  side branch {slow['layers']} × conv {slow['channels']} ch: {slow['calibrated_slowdown']:+.1%} "
              f"in-process (tried {slow['trials']})", flush=True)
        for k in (1, 2, 3):
            print(f"baseline run {k}/3 …", flush=True)
            _bench(args, args.work / "unchanged.bundle", args.work / f"baseline-run{k}.json")
        subprocess.run(["edgeseg", "gate", *(str(args.work / f"baseline-run{k}.json") for k in (1, 2, 3)),
                        "--baseline", str(args.work / "baseline.json"), "--update-baseline"], check=True)
        slow = verify_slowdown(args, slow, set(args.backends.split(",")))
        base = json.loads((args.work / "baseline.json").read_text())
        meta = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "slowdown": slow,
                "artifacts": sorted(a for a, v in base["artifacts"].items() if v["latency"].get("p50")),
                "run_sigma": base["run_sigma"], "args": {k: str(v) for k, v in vars(args).items()},
                "setup": (f"Bundle {args.bundle} with its {args.backends} artifacts only (the FP32 reference is "
                          f"then ONNX Runtime FP32: no PyTorch worker to start), {args.cases} cases of {args.data}; "
                          "`edgeseg bench --threads 2 "
                          f"--backends {args.backends} --rounds {args.rounds} --repeats {args.repeats} --batch-size 0 "
                          f"--e2e-cases 0`; baseline from 3 idle runs; gate defaults (limit +10 %, ÷ workload and "
                          f"÷ FP32 on its runtime, confirmation run); busy = one core {args.load:.0%} busy (busy_core.py); slowed = "
                          f"{SLOWED} + a side branch of {slow['layers']} conv × {slow['channels']} ch, "
                          f"{slow['verified'][-1]['bench_change']:+.1%} ÷ workload in an idle bench against the "
                          "baseline (tries: " + ", ".join(f"{t['branch']} {t['bench_change']:+.1%}"
                                                         for t in slow["verified"]) + ").")}
        meta_path.write_text(json.dumps(meta, indent=1))
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    done = {(r["condition"], r["run"]) for r in rows}
    todo = [(c, i) for i in range(1, args.n + 1) for c in args.conditions.split(",") if (c, i) not in done]
    for k, (condition, i) in enumerate(todo, 1):
        row = _one_run(args, condition, i, args.work / "baseline.json")
        with log.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows.append(row)
        tally = _tally(rows, meta)
        (args.out / "gate_flap.json").write_text(json.dumps(tally, indent=1) + "\n")
        (args.out / "gate_flap.md").write_text(_markdown(tally))
        mine = row["artifacts"].get(SLOWED, [{}])[0]
        elapsed = time.perf_counter() - t0
        print(f"[{k}/{len(todo)}] {condition} run {i}: {'FAIL' if row['failed'] else 'pass'}"
              f"{' (confirmed)' if row['confirmed_with_second_run'] else ''}; {SLOWED} {mine.get('change', 0):+.1%} "
              f"(band {mine.get('band', 0):.1%}); {row['seconds']:.0f} s, elapsed {elapsed / 60:.1f} min, "
              f"ETA {elapsed / k * (len(todo) - k) / 60:.0f} min", flush=True)
    print(json.dumps(_tally(rows, meta)["conditions"], indent=1))
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
