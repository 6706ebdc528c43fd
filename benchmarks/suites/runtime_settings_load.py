"""Issue K, part 3: which runtime settings hold up on a busy device. For each INT8 artifact of a bundle and each
candidate setting (OpenVINO: CPU pinning on/off, 2 or 1 inference threads; ONNX Runtime: intra-op spinning on/off,
2 or 1 threads), model-only latency at idle and with one core kept busy 30 % / 60 % of every 10 ms (the spinner of
`bench --load`), interleaved in rounds so drift of the machine hits every setting alike. Run on an idle machine:

    python benchmarks/suites/runtime_settings_load.py runs/end_to_end_k/chest.bundle --out chest_settings.json
"""
import argparse
import json
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.benchmark.load import background_load, label
from edgeseg.bundle import read_manifest
from edgeseg.bundle.members import artifact_bytes

OV = {"pinned (OpenVINO's default)": {}, "unpinned": {"ENABLE_CPU_PINNING": False}}
ORT = {"no spinning (edgeseg's default)": False, "spinning (ONNX Runtime's default)": True}


def predictor(bundle: Path, artifact: Artifact, threads: int, setting: str):
    """The artifact's runtime with one candidate setting."""
    if artifact.runtime == "openvino":
        from edgeseg.targets.openvino_backend import OvPredictor

        files = (artifact_bytes(bundle, artifact, "model"), artifact_bytes(bundle, artifact, "weights"))
        return OvPredictor(files, threads=threads, hint=artifact.details.get("inference_precision_hint"),
                           settings=OV[setting])
    import onnxruntime as ort

    from edgeseg.targets.onnxruntime_backend import session_options

    session = ort.InferenceSession(artifact_bytes(bundle, artifact, "model"), session_options(threads, ORT[setting]),
                                   providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return lambda x: session.run(None, {feed: x})[0]


def worker(bundle: Path, name: str, threads: int, setting: str, n: int) -> None:
    """One setting in a process of its own (spinning threads of one session must not steal from the next)."""
    manifest = read_manifest(bundle)
    artifact = next(Artifact.from_dict(a, bundle) for a in manifest["artifacts"] if a["name"] == name)
    sample = np.random.default_rng(0).standard_normal(manifest["input"]["shape"]).astype(np.float32)
    print(json.dumps(timed(predictor(bundle, artifact, threads, setting), sample, n)))


def timed(predict, sample: np.ndarray, n: int) -> list[float]:
    for _ in range(5):
        predict(sample)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        predict(sample)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--artifacts", default="x86-onnxruntime-int8,x86-avx512-openvino-int8")
    parser.add_argument("--loads", default="0.3,0.6")
    parser.add_argument("--n", type=int, default=60, help="timed runs per setting, load and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", nargs=3, metavar=("ARTIFACT", "THREADS", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.bundle, args.worker[0], int(args.worker[1]), args.worker[2], args.n)
    manifest = read_manifest(args.bundle)
    runtimes = {a["name"]: a["runtime"] for a in manifest["artifacts"]}
    loads = [0.0] + [float(x) for x in args.loads.split(",")]
    keys = [(name, threads, setting) for name in args.artifacts.split(",") for threads in (2, 1)
            for setting in (OV if runtimes[name] == "openvino" else ORT)]
    times = {key: {label(s): [] for s in loads} for key in keys}
    for r in range(args.rounds):
        for share in loads:
            with background_load(share) if share else nullcontext():
                for key in keys:
                    cmd = [sys.executable, __file__, str(args.bundle), "--n", str(args.n), "--worker", key[0],
                           str(key[1]), key[2]]
                    times[key][label(share)] += json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                                          text=True).stdout.splitlines()[-1])
            print(f"round {r + 1}/{args.rounds}, load {label(share)} done", flush=True)
    rows = [summary(key, values) for key, values in times.items()]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps({"bundle": str(args.bundle), "n": args.n, "rounds": args.rounds,
                                        "rows": rows}, indent=1))


def summary(key: tuple, times: dict[str, list[float]]) -> dict:
    name, threads, setting = key
    idle = float(np.percentile(times["0%"], 50))
    row = {"artifact": name, "threads": threads, "setting": setting, "idle_p50_ms": round(idle, 2)}
    for load, values in times.items():
        if load != "0%":
            p50, p99 = np.percentile(values, [50, 99])
            row[load] = {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
                         "p99_over_idle_p50": round(float(p99) / idle, 3)}
    return row


if __name__ == "__main__":
    main()
