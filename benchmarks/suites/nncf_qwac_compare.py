"""Issue D: NNCF ``quantize_with_accuracy_control`` (QWAC) against edgeseg's accuracy-aware OpenVINO INT8 on the
same model, calibration set, tuning cases and Dice limit; accuracy on the whole validation split, latency of
both (and the FP32 reference) in isolated processes in one run.

    python benchmarks/suites/nncf_qwac_compare.py BUNDLE --checkpoint CKPT --data DATASET --out result.json

BUNDLE is an ``edgeseg compress --max-dice-drop`` bundle of CKPT (its manifest gives the limit, the tuning
cases and the calibration recipe). QWAC gets the same limit as an absolute drop of the headline label's mean
Dice on the same tuning cases, the same 64 calibration images, and otherwise its defaults.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import nncf
    import openvino as ov
    import torch

    from edgeseg.benchmark.fingerprint import device_fingerprint
    from edgeseg.benchmark.isolated import measure_isolated
    from edgeseg.benchmark.runners import load_runners
    from edgeseg.bundle import load_bundle
    from edgeseg.checkpoint import read_spec
    from edgeseg.data.nnunet import NnUNetDataset
    from edgeseg.evaluation import compare_predictors, held_back_cases
    from edgeseg.inference import predict_mask
    from edgeseg.metrics import case_scores, headline_label
    from edgeseg.tuning.sensitivity import load_or_build_calibration

    torch.set_num_threads(args.threads)
    manifest = load_bundle(args.bundle)
    tuned = manifest["accuracy_aware"]
    limit = tuned["limits"]["max_dice_drop_points"]
    spec = read_spec(args.checkpoint)
    labels = spec.label_names
    headline = headline_label(labels)
    dataset = NnUNetDataset(args.data)
    val_ids = held_back_cases(spec, dataset)
    calib = load_or_build_calibration(args.data, spec, manifest["calibration"]["size"], manifest["calibration"]["seed"])
    if calib.case_ids != manifest["calibration"]["cases"]:
        raise SystemExit("the rebuilt calibration set differs from the bundle's")
    artifacts = {a["name"]: a for a in manifest["artifacts"]}
    fp32_onnx = args.bundle / artifacts["x86-onnxruntime-fp32"]["files"]["model"]
    model = ov.Core().read_model(str(fp32_onnx))
    shape = list(model.input(0).get_partial_shape())
    model.reshape({model.input(0): ov.PartialShape([shape[0], shape[1], *spec.preprocessing.size])})
    samples = [arr[i : i + 1] for arr in calib.inputs.values() for i in range(len(arr))]
    tune_cases = [dataset.load(c) for c in tuned["tuning"]["cases"]]

    def validate(compiled, items):
        def run(batch):
            return np.asarray(compiled(np.ascontiguousarray(batch, dtype=np.float32))[0])

        dice = [case_scores(predict_mask(run, c.image, spec.preprocessing, spec.spatial_dims), c.label, labels)[headline]["dice"]
                for c in items]
        return float(np.mean(dice)), dice

    t0 = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(model, nncf.Dataset(samples), nncf.Dataset(tune_cases), validate,
                                                    max_drop=limit / 100, drop_type=nncf.DropType.ABSOLUTE,
                                                    subset_size=len(samples))
    qwac_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="qwac-") as tmp:
        ov.save_model(quantized, str(Path(tmp) / "qwac.xml"))
        qwac = {"name": "nncf-qwac", "runtime": "openvino", "precision": "int8", "root": tmp, "details": {},
                "files": {"model": "qwac.xml", "weights": "qwac.bin"}}
        compared = [artifacts["torch-fp32"], artifacts["x86-avx512-openvino-int8"], qwac]
        threads = {a["name"]: args.threads for a in compared}
        runners, _ = load_runners(compared, args.bundle, threads)
        scores = compare_predictors(runners, "torch-fp32", spec, dataset, val_ids, "validation")
        latency = measure_isolated(args.bundle, compared, samples[0], threads, repeats=args.repeats, rounds=2)
    ops = [op.get_type_name() for op in quantized.get_ordered_ops()]
    result = {"bundle": str(args.bundle), "limit_points": limit, "headline_label": headline,
              "tuning_cases": len(tune_cases), "validation_cases": len(val_ids),
              "edgeseg": {"tuning_seconds_all_targets": tuned["seconds"],
                          "openvino_search_seconds": tuned["targets"]["x86-avx512-openvino-int8"]["seconds"],
                          "added_float": tuned["targets"]["x86-avx512-openvino-int8"]["added"]},
              "qwac": {"seconds": round(qwac_seconds, 1), "fake_quantize_ops": ops.count("FakeQuantize")},
              "validation": {name: {"dice": s["mean"][headline]["dice"], "drift_ci95": s["drift_ci95"][headline],
                                    "agreement": s["agreement"][headline], "worst": s["worst"][headline],
                                    "structure_changes": len(s["structure_changes"])} for name, s in scores.items()},
              "latency_p50_ms": {name: lat.get("p50_ms") for name, lat in latency.items()},
              "device": device_fingerprint(args.threads)}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("qwac", "validation", "latency_p50_ms")}, indent=1))


if __name__ == "__main__":
    main()
