"""``edgeseg compress``: prune → calibrate → quantize/convert per target → verified bundle, with its cost measured.

One path: checkpoint → (pruned) model → one FP32 ONNX → every target's artifact → drift and latency on the
held-back validation cases → ``manifest.json``. Built in a staging directory that replaces ``out`` at the end.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bench.fingerprint import device_fingerprint
from .bench.harness import case_model_input
from .bench.isolated import latency_threads, measure_isolated
from .bench.runners import load_runners
from .bundle import check_replaceable, hash_files, staging_dir, tool_versions, write_manifest
from .calibration import (
    CalibrationSet,
    build_calibration_set,
    bundle_calibration,
    check_disjoint,
    check_preprocessing,
    load_calibration,
)
from .checkpoint import file_sha256, load_checkpoint, read_checkpoint_bytes, save_checkpoint
from .data.nnunet import NnUNetDataset, data_root
from .errors import EdgesegError
from .evaluate import check_compatible, compare_predictors, held_back_cases, is_training_dataset
from .housekeeping import work_dir
from .inference import torch_predictor
from .progress import console
from .targets import get_target, load_profile
from .targets.base import BuildRequest
from .targets.float_nodes import plan_float_nodes
from .validation import paths_as_path


@dataclass
class CompressConfig:
    checkpoint: Path
    out: Path
    precision: str = "int8"
    targets: list[str] = field(default_factory=lambda: ["onnxruntime", "openvino", "tensorrt"])
    profiles: list[str] = field(default_factory=list)   # explicit profiles replace ``targets``
    calib: Path | None = None                           # dataset folder or calibration .npz
    calib_from_checkpoint: bool = False
    calib_size: int = 64
    calib_strategy: str = "stratified"
    calib_method: str | None = None
    eval_data: Path | None = None
    eval_cases: int | None = 32                         # held-back validation cases for the drift summary
    prune: float | None = None
    prune_macs: float | None = None
    finetune_epochs: int = 0
    finetune_minutes: float | None = None
    keep_float: list[str] = field(default_factory=list)
    quantize_ops: list[str] = field(default_factory=list)
    preset: bool = True
    baseline_checkpoint: Path | None = None              # also time this model's PyTorch eager (default when pruning: the input)
    accuracy_aware: object | None = None                 # edgeseg.tuning.accuracy_aware.AccuracyAwareSettings
    threads: int | None = None
    latency_repeats: int = 30
    seed: int = 0
    force: bool = False

    def __post_init__(self):
        paths_as_path(self)  # str paths from Python work as well as Path


def resolve_profiles(cfg: CompressConfig) -> list:
    if cfg.profiles:
        profiles = [load_profile(p) for p in cfg.profiles]
    else:
        profiles = []
        for name in cfg.targets:
            target = get_target(name)
            if cfg.precision not in target.default_profiles:
                raise EdgesegError(f"target {target.name} has no {cfg.precision} profile "
                                   f"(it offers {', '.join(target.default_profiles)})")
            profiles.append(load_profile(target.default_profiles[cfg.precision]))
    for profile in profiles:
        reason = get_target(profile.target).missing(build=True)
        if reason:
            raise EdgesegError(f"target {profile.name}: cannot build here: {reason}")
    return profiles


def deployment_sizes(profiles, model_size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every spatial size the profiles deploy at (the calibration set needs inputs at each), in order."""
    sizes = list(profiles[0].spatial_sizes(model_size)) if profiles else [tuple(model_size)]
    for p in profiles[1:]:
        sizes += [s for s in p.spatial_sizes(model_size) if s not in sizes]
    return sizes


def _checkpoint_dataset(spec) -> Path:
    name = spec.data.get("dataset")
    if not name:
        raise EdgesegError("the checkpoint records no dataset; pass --calib DATA")
    path = data_root() / name
    if not path.is_dir():
        raise EdgesegError(f"the checkpoint's dataset {name} is not under {data_root()} (set EDGESEG_DATA or pass --calib)")
    return path


def resolve_data(cfg: CompressConfig, spec, sizes) -> tuple[NnUNetDataset | None, list[str], CalibrationSet | None, Path | None]:
    """The evaluation dataset and cases (held-back validation), the calibration set (checked disjoint) and
    the dataset folder holding training cases (for pruning statistics and recovery)."""
    calib_dir = cfg.calib if cfg.calib and Path(cfg.calib).is_dir() else None
    if cfg.calib and not Path(cfg.calib).exists():
        raise EdgesegError(f"{cfg.calib}: calibration data not found")
    if cfg.calib_from_checkpoint:
        calib_dir = _checkpoint_dataset(spec)
    eval_dir = cfg.eval_data or calib_dir
    if eval_dir is None and spec.data.get("dataset") and (data_root() / spec.data["dataset"]).is_dir():
        eval_dir = data_root() / spec.data["dataset"]
    dataset, eval_ids, held_back = None, [], []
    if eval_dir is not None:
        dataset = NnUNetDataset(eval_dir)
        check_compatible(spec, dataset)
        held_back = eval_ids = held_back_cases(spec, dataset, cfg.seed)
        if cfg.eval_cases:
            eval_ids = eval_ids[: cfg.eval_cases]
    train_dir = calib_dir or (dataset.root if dataset is not None and is_training_dataset(spec, dataset) else None)
    if cfg.precision != "int8":
        return dataset, eval_ids, None, train_dir
    if cfg.calib is None and not cfg.calib_from_checkpoint:
        raise EdgesegError("INT8 needs calibration data: pass --calib DATA_DIR (or a calibrate .npz), or "
                           "--calib-from-checkpoint to use the training cases recorded in the checkpoint; "
                           "edgeseg never calibrates on random data")
    if calib_dir is not None:  # the evaluated cases are left out by content, whichever folder holds them
        recorded = spec.data.get("train_cases") if is_training_dataset(spec, NnUNetDataset(calib_dir)) else None
        # every held-back image, not only the evaluated ones: bench evaluates the whole split, and datasets repeat
        # an image under several case ids (DDTI: one per nodule, across train and val)
        evaluated = set(dataset.case_hashes(held_back).values()) if dataset is not None else set()
        calib = build_calibration_set(calib_dir, spec.preprocessing, spec.spatial_dims, cfg.calib_size,
                                      cfg.calib_strategy, cfg.seed, "train", sizes=sizes, case_ids=recorded,
                                      exclude_sha256=evaluated)
    else:
        calib = load_calibration(cfg.calib)
        check_preprocessing(calib, spec.preprocessing, sizes)
    if dataset is not None:
        check_disjoint(calib, dataset, eval_ids)
    return dataset, eval_ids, calib, train_dir


def artifact_metadata(spec, source_sha: str) -> dict[str, str]:
    """Written into every artifact, so a copied file still says how to feed it and what it outputs."""
    return {"edgeseg.preprocessing": json.dumps(spec.preprocessing.to_dict()),
            "edgeseg.label_names": json.dumps(spec.label_names), "edgeseg.spatial_dims": str(spec.spatial_dims),
            "edgeseg.input": json.dumps({"name": "image", "layout": "NC" + "DHW"[3 - spec.spatial_dims:],
                                         "dtype": "float32", "channels": spec.in_channels}),
            "edgeseg.source_checkpoint_sha256": source_sha}


def _stage(n: int, total: int, text: str) -> None:
    console.print(f"[bold cyan][{n}/{total}][/] {text}")


def _input_layout(spec, dataset, train_dir) -> dict:
    """``image_dims``: 2 or 3, the dimensionality of the images the model was given (a 2D model may run on volume
    slices), and for volumes ``axcodes``: their orientation (the checkpoint's record, else the dataset volumes').
    `edgeseg infer` refuses inputs of the other dimensionality and turns volumes to that orientation."""
    from .data.nnunet import NnUNetDataset

    source = dataset if dataset is not None else NnUNetDataset(train_dir) if train_dir else None
    if source is None:
        return {"image_dims": None, "axcodes": spec.data.get("axcodes")}
    image, geometry = source.load_image(next(iter(source.cases)))
    volumes = image.ndim == 4
    return {"image_dims": image.ndim - 1, "axcodes": (spec.data.get("axcodes") or geometry.axcodes) if volumes else None}


def compress(cfg: CompressConfig) -> dict:
    """Run the whole pipeline; returns the manifest written to ``cfg.out``."""
    from .onnx_export import export_onnx, onnx_parity
    from .prune import count_macs

    start = time.perf_counter()
    source = read_checkpoint_bytes(cfg.checkpoint)
    source_sha = hashlib.sha256(source).hexdigest()
    model, spec = load_checkpoint(source, str(cfg.checkpoint))  # the very bytes that were hashed
    profiles = resolve_profiles(cfg)
    sizes = deployment_sizes(profiles, spec.preprocessing.size)
    check_replaceable(cfg.out, cfg.force)  # before any work: a folder edgeseg did not write is never replaced
    total = 6
    _stage(1, total, "data: evaluation cases and calibration set")
    dataset, eval_ids, calib, train_dir = resolve_data(cfg, spec, sizes)
    shape = (1, spec.in_channels, *spec.preprocessing.size)
    macs, params = count_macs(model, shape)
    manifest: dict = {"source_checkpoint": {"name": Path(cfg.checkpoint).name, "sha256": source_sha},
                      "model": {k: v for k, v in spec.to_dict().items() if k not in ("metrics", "training", "preprocessing")},
                      "preprocessing": spec.preprocessing.to_dict(), "labels": spec.label_names,
                      "input": json.loads(artifact_metadata(spec, "")["edgeseg.input"]) | {"shape": list(shape)}
                      | _input_layout(spec, dataset, train_dir),
                      "macs": {"original": macs}, "params": {"original": params},
                      "calibration": calib.manifest if calib else None, "pruning": None, "artifacts": []}
    with staging_dir(cfg.out, cfg.force) as stage, work_dir("edgeseg-work") as work:
        _stage(2, total, "prune" if (cfg.prune or cfg.prune_macs) else "prune: skipped (no --prune)")
        reference_ckpt = Path(work) / "reference.ckpt"
        if cfg.prune or cfg.prune_macs:
            from .prune.pipeline import PruneSettings, prune_and_recover

            settings = PruneSettings(cfg.prune, cfg.prune_macs, cfg.finetune_epochs, cfg.finetune_minutes,
                                     min(cfg.calib_size, 64))
            calib_inputs = calib.inputs[tuple(spec.preprocessing.size)] if calib else None
            manifest["pruning"] = prune_and_recover(model, spec, settings, shape, dataset, eval_ids, train_dir,
                                                    calib_inputs)
            spec.pruning = {"report": manifest["pruning"], "source_checkpoint_sha256": source_sha}
            macs, params = count_macs(model, shape)
        manifest["macs"]["final"], manifest["params"]["final"] = macs, params
        save_checkpoint(reference_ckpt, model, spec)

        _stage(3, total, "export FP32 ONNX and check parity with PyTorch")
        fp32_onnx = export_onnx(model, Path(work) / "model.fp32.onnx", (2, *shape[1:]),
                                metadata=artifact_metadata(spec, source_sha))
        parity_inputs = (calib.inputs[tuple(spec.preprocessing.size)][:4] if calib else
                         np.concatenate([case_model_input(spec, dataset, c) for c in eval_ids[:4]]) if eval_ids else
                         None)
        import onnx

        float_nodes = plan_float_nodes(onnx.load(str(fp32_onnx)), cfg.preset, cfg.keep_float, cfg.quantize_ops)
        plans: dict[str, dict] = {}  # profile name → {"float_nodes", "options"} from the accuracy-aware search
        if cfg.accuracy_aware is not None and calib is not None:
            from .tuning.accuracy_aware import tune_float_plans

            console.print(f"[bold cyan]accuracy-aware INT8[/] limits, mean Dice drop vs FP32 on the tuning cases "
                          f"(a structure that vanishes fails too): "
                          f"{cfg.accuracy_aware.limits.describe(spec.label_names[1:])}")
            plans, manifest["accuracy_aware"] = tune_float_plans(
                cfg.accuracy_aware, model, spec, fp32_onnx, calib, profiles,
                {"preset": cfg.preset, "keep_float": cfg.keep_float, "quantize": cfg.quantize_ops}, train_dir,
                dataset, eval_ids, cfg.threads, Path(work) / "tuning", cfg.seed)

        always = ["torch-fp32", "x86-onnxruntime-fp32"]  # the reference and the plain FP32 ONNX
        builds = [load_profile(name) for name in always] + [p for p in profiles if p.name not in always]
        _stage(4, total, f"build {len(builds)} artifacts: {', '.join(p.name for p in builds)}")
        options = {"calibration_method": cfg.calib_method} if cfg.calib_method else {}
        artifacts = []
        for profile in builds:
            t0 = time.perf_counter()
            console.print(f"  building {profile.name} …")
            request = BuildRequest(fp32_onnx=fp32_onnx, out_dir=stage, profile=profile,
                                   calibration=calib.inputs if calib else {}, model_size=tuple(spec.preprocessing.size),
                                   float_nodes=([] if profile.precision == "fp32" else
                                                plans.get(profile.name, {}).get("float_nodes", float_nodes)),
                                   metadata=artifact_metadata(spec, source_sha),
                                   options={**options, **plans.get(profile.name, {}).get("options", {})},
                                   checkpoint=reference_ckpt)
            artifact = get_target(profile.target).build(request).to_dict()
            artifact["hashes"] = hash_files(stage, artifact)  # measured below through the same verified reads
            artifact["build_seconds"] = round(time.perf_counter() - t0, 1)
            artifacts.append(artifact)
        if parity_inputs is not None:
            artifacts[1]["parity_vs_torch"] = onnx_parity(model, stage / artifacts[1]["files"]["model"], parity_inputs)

        _stage(5, total, f"measure drift on {len(eval_ids)} held-back validation cases and latency")
        sample = parity_inputs[:1] if parity_inputs is not None else np.zeros(shape, np.float32)
        measure_artifacts(artifacts, stage, model, spec, dataset, eval_ids, cfg, sample)
        manifest.update(artifacts=artifacts, float_nodes=float_nodes, preset=cfg.preset,
                        keep_float=cfg.keep_float, quantize_ops=cfg.quantize_ops, targets=[p.name for p in profiles],
                        profiles={p.name: p.to_dict() for p in builds}, tool_versions=tool_versions(),
                        device=device_fingerprint(cfg.threads),
                        evaluation={"dataset": dataset.name if dataset else None, "cases": eval_ids},
                        compress_seconds=round(time.perf_counter() - start, 1))
        _stage(6, total, f"write bundle {cfg.out}")
        if calib is not None:
            bundle_calibration(stage, manifest, calib, tuple(spec.preprocessing.size))
        manifest = write_manifest(stage, manifest)
    return manifest


def measure_artifacts(artifacts, bundle_dir, model, spec, dataset, eval_ids, cfg, sample) -> None:
    """Drift vs the FP32 PyTorch reference on ``eval_ids`` and batch-1 latency, recorded into each artifact."""
    import torch

    reference = artifacts[0]["name"]
    threads = {a["name"]: latency_threads(cfg.threads) for a in artifacts}  # as bench: one count for all
    runners, others = load_runners(artifacts, bundle_dir, threads, skip={reference})
    for artifact in artifacts:
        if artifact["name"] in others:
            status, reason = others[artifact["name"]]
            artifact["measured_with" if status == "accuracy_only" else "not_measured"] = reason
    torch.set_num_threads(threads[reference] or torch.get_num_threads())
    runners = {reference: torch_predictor(model), **runners}
    if dataset is not None and eval_ids:
        scores = compare_predictors(runners, reference, spec, dataset, eval_ids, "drift")
        held_back = len(held_back_cases(spec, dataset, cfg.seed))  # the summary says "n of N"
        for artifact in artifacts:
            if artifact["name"] in scores:
                s = scores[artifact["name"]]
                artifact["accuracy"] = {"cases": len(eval_ids), "held_back_cases": held_back, "dice": {k: v["dice"] for k, v in s["mean"].items()},
                                        "drift_vs_fp32": s["drift"], "drift_ci95": s["drift_ci95"],
                                        "agreement_vs_fp32": s["agreement"], "structure_changes": s["structure_changes"],
                                        "worst_case": {k: {"case": c, "delta": d} for k, (c, d) in s["worst"].items()}}
    timed = [a for a in artifacts if a["name"] in runners and "measured_with" not in a]
    baseline = cfg.baseline_checkpoint or (cfg.checkpoint if (cfg.prune or cfg.prune_macs) else None)
    if baseline:  # e.g. the unpruned model: the speed-up a user gets over what they had
        base = Path(baseline).resolve()
        timed.append({"name": f"baseline {base.name}", "runtime": "torch", "precision": "fp32",
                      "files": {"model": base.name}, "root": str(base.parent)})
        threads[timed[-1]["name"]] = threads[reference]
    latency = measure_isolated(bundle_dir, timed, sample, threads, repeats=cfg.latency_repeats, rounds=3)
    if baseline:
        artifacts[0]["baseline"] = {"checkpoint": Path(baseline).name, "sha256": file_sha256(baseline),
                                    "runtime": "torch", "latency": latency.pop(timed[-1]["name"])}
    for artifact in artifacts:
        runner = runners.get(artifact["name"])
        if "error" in latency.get(artifact["name"], {}):
            artifact["not_measured"] = latency.pop(artifact["name"])["error"]
        if artifact["name"] in latency:
            artifact["latency"] = latency[artifact["name"]]
        artifact["executed_precision"] = getattr(runner, "executed_precision", "fp32 (PyTorch eager)") if runner else None
        artifact["size_bytes"] = sum((bundle_dir / f).stat().st_size for f in artifact["files"].values())
