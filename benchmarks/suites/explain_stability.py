"""Issue L: how many RISE masks (and occlusion patches) a map needs. For the bundle's FP32 reference, on the first
cases of the val split: each map made with two seeds (RISE) and the rank correlation between the two, per number of
masks, with the time per case; occlusion per grid size against the finest grid. The FP32 model is probed through
ONNX Runtime (the PyTorch model's maps, faster). The chosen default is the smallest
N whose seed-to-seed ρ is ≥ 0.9 on every case's mean.

    python benchmarks/suites/explain_stability.py runs/k/chest.bundle --data $D/Dataset002_ChestXrayLungs --out s.json
"""
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeseg.benchmark.harness import BenchConfig, open_bench
from edgeseg.benchmark.inputs import case_model_input
from edgeseg.explanation.case_maps import reference_regions
from edgeseg.explanation.maps import MapSettings, occlusion_map, rise_map, rise_masks
from edgeseg.explanation.metrics import rank_correlation
from edgeseg.targets import get_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--masks", default="32,64,128,256")
    parser.add_argument("--grids", default="4,6,8,12")
    parser.add_argument("--artifact", default="x86-onnxruntime-fp32", help="the FP32 model to probe (the fastest)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run = open_bench(BenchConfig(bundle=args.bundle, data=args.data, max_cases=args.cases, threads=2, latency=False))
    artifact = next(a for a in run.artifacts if a.name == args.artifact)
    predict = get_target(artifact.runtime).load(run.bundle, artifact, 2)
    labels = len(run.spec.label_names) - 1
    base = MapSettings()
    rows = {"rise": {}, "occlusion": {}}
    for cid in run.case_ids:
        x = case_model_input(run.spec, run.dataset, cid)[0]
        regions = reference_regions(predict, x, labels)
        if not regions.any():
            continue
        for n in map(int, args.masks.split(",")):
            maps, seconds = [], []
            for seed in (0, 1):
                settings = replace(base, rise_masks=n, seed=seed)
                start = time.perf_counter()
                maps.append(rise_map(predict, x, regions, settings, rise_masks(x.shape[1:], settings)))
                seconds.append(time.perf_counter() - start)
            rhos = [rank_correlation(a, b) for a, b, r in zip(*maps, regions) if r.any()]
            rows["rise"].setdefault(n, []).append({"case": cid, "rho_seed0_seed1": float(np.mean(rhos)),
                                                   "seconds": float(np.mean(seconds))})
        grids = sorted(map(int, args.grids.split(",")))
        finest = occlusion_map(predict, x, regions, replace(base, occlusion_grid=grids[-1]))
        for grid in grids:
            start = time.perf_counter()
            coarse = occlusion_map(predict, x, regions, replace(base, occlusion_grid=grid))
            rows["occlusion"].setdefault(grid, []).append({
                "case": cid, "rho_vs_finest": float(np.mean([rank_correlation(a, b) or 0 for a, b, r
                                                              in zip(coarse, finest, regions) if r.any()])),
                "seconds": time.perf_counter() - start})
        print(cid, {n: round(v[-1]["rho_seed0_seed1"], 3) for n, v in rows["rise"].items()}, flush=True)
    summary = {kind: {str(k): {"mean_rho": float(np.mean([r[next(iter(set(r) - {'case', 'seconds'}))] for r in v])),
                               "min_rho": float(np.min([r[next(iter(set(r) - {'case', 'seconds'}))] for r in v])),
                               "seconds_per_case": float(np.mean([r["seconds"] for r in v])), "cases": len(v)}
                      for k, v in per.items()} for kind, per in rows.items()}
    document = {"bundle": str(args.bundle), "model": artifact.name, "summary": summary, "rows": rows}
    args.out.write_text(json.dumps(document, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
