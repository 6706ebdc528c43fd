"""What an nnU-Net user runs today against what edgeseg deploys, per image, side by side in one process.

Every method goes from the decoded image array to the label map in the image's own geometry (crop, normalize,
resample, sliding window, back), on the same val cases and the same number of threads:

- ``nnunet-eager``: ``nnUNetPredictor.predict_single_npy_array`` (mirroring off, CPU), what
  ``nnUNetv2_predict --disable_tta -device cpu`` runs per case (without its file reading/writing and worker pool);
- ``nnunet-compile``: the same with the network under ``torch.compile`` (nnU-Net's ``nnUNet_compile``);
- every artifact of the edgeseg bundle through ``Bundle.predictor(artifact=…).predict`` (numpy pre/post-processing
  plus the artifact's runtime).

Per method: per-image latency p50 and p10–p90 over the cases (each case's time is the median of ``--rounds``),
speed-up over nnunet-eager (ratio of p50s), Dice of every label against the ground truth and the agreement
(Dice) with nnunet-eager's masks. Writes ``nnunet_vs_predictor.json`` and ``.md`` to ``--out``.

    python benchmarks/suites/nnunet_vs_predictor.py --model-folder RESULTS/Trainer__Plans__2d --fold 0 \\
        --bundle model.bundle --data ../shared/datasets/Dataset002_ChestXrayLungs --cases 65 --out OUT
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    total = (a == value).sum() + (b == value).sum()
    return 1.0 if total == 0 else float(2 * ((a == value) & (b == value)).sum() / total)


def nnunet_predictor(folder: Path, fold: str, compile_network: bool):
    """nnUNetPredictor set up from the folder, the checkpoint read with edgeseg's allow-listed loader."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from edgeseg.importers.nnunet import read_checkpoint
    from edgeseg.models import create_model

    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    checkpoint = read_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth")
    config = folder.name.rsplit("__", 1)[-1]
    manager = PlansManager(plans)
    arch = manager.get_configuration(config).network_arch_init_kwargs
    network = create_model(f"nnunet:{manager.get_configuration(config).network_arch_class_name.rsplit('.', 1)[-1]}",
                           len(dataset["channel_names"]), len(dataset["labels"]), **arch)
    network.load_state_dict(checkpoint["network_weights"])
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.manual_initialization(network.eval(), manager, manager.get_configuration(config),
                                    [checkpoint["network_weights"]], dataset, checkpoint["trainer_name"],
                                    checkpoint.get("inference_allowed_mirroring_axes"))
    if compile_network:
        predictor.network = torch.compile(predictor.network)
    reader = manager.image_reader_writer_class()
    return lambda path, image: predictor.predict_single_npy_array(*reader.read_images([str(path)]), None, None,
                                                                  False)[0]


def timed(run, cases: list, rounds: int, warmup: int) -> tuple[list[float], list[np.ndarray]]:
    for path, image, _ in cases[:warmup]:
        run(path, image)
    times, masks = [[] for _ in cases], [None] * len(cases)
    for _ in range(rounds):
        for i, (path, image, _) in enumerate(cases):
            start = time.perf_counter()
            masks[i] = np.asarray(run(path, image)).astype(np.uint8)
            times[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times], masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-folder", type=Path, required=True)
    parser.add_argument("--fold", default="0")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=65)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import edgeseg
    from edgeseg.data import NnUNetDataset

    dataset = NnUNetDataset(args.data)
    ids = dataset.split("val")[: args.cases]
    cases = [(dataset.cases[c].image_files[0], dataset.load_image(c)[0], dataset.load(c).label) for c in ids]
    bundle = edgeseg.load_bundle(args.bundle)
    methods = {"nnunet-eager": nnunet_predictor(args.model_folder, args.fold, False)}
    if not args.no_compile:
        methods["nnunet-compile"] = nnunet_predictor(args.model_folder, args.fold, True)
    for artifact in (a for a in bundle.artifacts if a.runtime != "torch"):  # the torch one is the reference
        predictor = bundle.predictor(artifact=artifact.name, threads=args.threads)
        methods[artifact.name] = lambda path, image, p=predictor: p.predict(image)
    results, reference = {}, None
    for name, run in methods.items():
        start = time.perf_counter()
        times, masks = timed(run, cases, args.rounds, args.warmup)
        reference = reference if reference is not None else masks
        labels = range(1, len(bundle.labels))
        results[name] = {
            "p50_ms": statistics.median(times), "p10_ms": float(np.percentile(times, 10)),
            "p90_ms": float(np.percentile(times, 90)), "seconds": round(time.perf_counter() - start, 1),
            "dice": {bundle.labels[v]: float(np.mean([dice(m, c[2], v) for m, c in zip(masks, cases)])) for v in labels},
            "agreement_with_nnunet": {bundle.labels[v]: float(np.mean([dice(m, r, v) for m, r in zip(masks, reference)]))
                                      for v in labels}}
        print(name, json.dumps(results[name]), flush=True)
    base = results["nnunet-eager"]["p50_ms"]
    for r in results.values():
        r["speedup_vs_nnunet_eager"] = base / r["p50_ms"]
    report = {"schema": "edgeseg.nnunet_vs_predictor/1", "cases": len(ids), "rounds": args.rounds,
              "threads": args.threads, "model_folder": args.model_folder.name, "bundle": str(args.bundle),
              "definition": "per-image latency from the decoded image to the label map in its own geometry; p50 and "
                            "p10–p90 over the cases (each case: median of the rounds); Dice vs ground truth and vs "
                            "nnunet-eager's masks, mean over the cases", "methods": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nnunet_vs_predictor.json").write_text(json.dumps(report, indent=1))
    rows = ["| method | p50 ms [p10–p90] | × nnunet-eager | Dice vs truth | agreement with nnunet-eager |",
            "|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['p50_ms']:.1f} [{r['p10_ms']:.1f}–{r['p90_ms']:.1f}] | "
                    f"{r['speedup_vs_nnunet_eager']:.2f}× | "
                    f"{', '.join(f'{k} {v:.4f}' for k, v in r['dice'].items())} | "
                    f"{', '.join(f'{k} {v:.4f}' for k, v in r['agreement_with_nnunet'].items())} |")
    (args.out / "nnunet_vs_predictor.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
