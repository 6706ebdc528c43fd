"""Issues F and K: `edgeseg infer` on N real images against the pure model latency × N, measured in one run:
through the artifact's end-to-end graph and through the host path (--no-end-to-end), back to back.

    python benchmarks/suites/infer_throughput.py BUNDLE --data DATASET --n 100 --threads 2 [--artifact NAME] --out r.json

The images are read from the dataset folder (never copied); masks go to a temporary folder. The model-only
latency is the artifact's batch-1 and batch-B p50 timed by bench's isolated worker, right before infer.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--artifact", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from edgeseg.benchmark.fingerprint import device_fingerprint
    from edgeseg.benchmark.isolated import measure_isolated
    from edgeseg.bundle import load_bundle, manifest_artifacts
    from edgeseg.checkpoint import CheckpointSpec
    from edgeseg.data.io import read_array
    from edgeseg.infer import InferConfig, run_infer
    from edgeseg.infer.backend import choose_artifact

    images = sorted((args.data / "imagesTr").glob("*"))[: args.n]
    manifest = load_bundle(args.bundle)
    spec = CheckpointSpec.from_manifest(manifest)
    artifact, _ = choose_artifact(manifest_artifacts(manifest), args.backend, args.artifact)
    sample = spec.preprocessing(read_array(images[0])[0])[None]
    model = measure_isolated(args.bundle, [artifact], sample, {artifact.name: args.threads}, repeats=60, rounds=2,
                             batch_sizes=(args.batch_size,))[artifact.name]
    n_model = model["p50_ms"] * len(images) / 1e3  # what model-only time allows for the N images, at batch 1
    result = {"bundle": str(args.bundle), "artifact": artifact.name, "threads": args.threads,
              "batch_size": args.batch_size, "model_p50_ms_batch1": model["p50_ms"],
              f"model_p50_ms_per_image_batch{args.batch_size}":
                  model["batches"][f"batch_{args.batch_size}"]["p50_ms"] / args.batch_size,
              "runs": {}, "device": device_fingerprint(args.threads)}
    # the end-to-end graph (pre/post in the graph, one image per call), then the host path (batched), back to back
    for mode, end_to_end in (("end_to_end_graph", True), ("host_path", False)):
        with tempfile.TemporaryDirectory(prefix="edgeseg-infer-") as tmp:
            t0 = time.perf_counter()
            summary = run_infer(InferConfig(bundle=args.bundle, inputs=images, out=Path(tmp) / "masks",
                                            backend=args.backend, artifact=artifact.name, threads=args.threads,
                                            batch_size=args.batch_size, end_to_end=end_to_end))
            wall = time.perf_counter() - t0
        n = summary["cases"]
        result["runs"][mode] = {
            "images": n, "failed": summary["failed"], "end_to_end_images": summary["end_to_end_images"],
            "infer_wall_s": round(wall, 3), "infer_wall_without_load_s": round(wall - summary["load_seconds"], 3),
            "images_per_s": round(n / wall, 2), "stages_seconds": summary["stages_seconds"],
            "throughput_vs_model_only": round(n_model / wall, 3),
            "throughput_without_load_vs_model_only": round(n_model / (wall - summary["load_seconds"]), 3)}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "device"}, indent=1))


if __name__ == "__main__":
    main()
