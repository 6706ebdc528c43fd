"""``edgeseg bench``: every artifact of a bundle — and, on request, what users would pick instead — run on the
same cases: accuracy against ground truth and against the FP32 reference, model-only and end-to-end latency,
cold start, memory and size. Returns the result dict of ``benchmarks/SCHEMA.md`` (schema ``edgeseg-bench`` v1).
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import MANIFEST, failed_files, read_manifest
from ..checkpoint import CheckpointSpec, file_sha256
from ..data.nnunet import NnUNetDataset
from ..errors import EdgesegError
from ..evaluate import check_compatible, compare_predictors, naming_case_file, split_cases
from ..housekeeping import work_dir
from ..inference import predict_logits
from ..metrics import headline_label
from ..progress import console, progress_bar
from ..targets import get_target, load_profile
from ..validation import paths_as_path
from .fingerprint import device_fingerprint
from .isolated import latency_threads, measure_isolated
from .ratios import add_ratios, run_noise
from .runners import load_runners
from .schema import RESULT_SCHEMA_NAME, RESULT_SCHEMA_VERSION
from .verdict import bench_verdict, check_limit_labels


@dataclass
class BenchConfig:
    bundle: Path
    data: Path
    split: str = "val"
    max_cases: int | None = None          # the first N cases of the split
    backends: list[str] = field(default_factory=list)  # runtimes to run; empty = all (the reference always runs)
    threads: int | None = None            # None: every core this process may use
    repeats: int = 50
    rounds: int = 6                       # the gate judges latency from ≥ 6 (edgeseg.gate.baseline.MIN_ROUNDS)
    warmup: int = 5
    batch_size: int = 8                   # the larger batch for throughput (0: batch 1 only)
    e2e_cases: int = 8
    latency: bool = True
    compare_baselines: bool = False
    baseline_checkpoint: Path | None = None  # e.g. the unpruned model, PyTorch eager
    command: str | None = None
    limits: dict = field(default_factory=dict)  # the verdict's Dice limits: max_dice_drop_points, per_label_points

    def __post_init__(self):
        paths_as_path(self)  # str paths from Python work as well as Path


def _refused(manifest: dict, failed: dict[str, str]) -> dict[str, str]:
    """Artifacts with a file that failed sha256 verification → ``"path: reason"`` of the first such file."""
    out = {}
    for artifact in manifest["artifacts"]:
        hits = [f"{path}: {failed[path]}" for path in artifact["files"].values() if path in failed]
        if hits:
            out[artifact["name"]] = hits[0]
    return out


def _cases(cfg: BenchConfig, spec, dataset: NnUNetDataset) -> list[str]:
    ids = split_cases(spec, dataset, cfg.split)
    ids = ids[: cfg.max_cases] if cfg.max_cases else ids
    if not ids:
        raise EdgesegError(f"{dataset.root}: no cases in split {cfg.split!r}")
    return ids


def first_model_input(spec, image: np.ndarray) -> np.ndarray:
    """The first batch the inference path feeds the model for ``image``, cut to one sample: the latency input."""
    captured = []

    def capture(batch: np.ndarray) -> np.ndarray:
        captured.append(np.array(batch[:1]))
        return np.zeros((batch.shape[0], spec.num_classes, *batch.shape[2:]), np.float32)

    predict_logits(capture, image, spec.preprocessing, spec.spatial_dims)
    return captured[0]


def case_model_input(spec, dataset: NnUNetDataset, case_id: str) -> np.ndarray:
    """:func:`first_model_input` of a dataset case (a volume's first slice for a 2D model); an error names the
    case's file."""
    with naming_case_file(dataset, case_id):
        return first_model_input(spec, dataset.load_image(case_id)[0])


def _choose_reference(artifacts: list[dict], refused: dict) -> dict:
    """The FP32 PyTorch model when torch is here, else the first FP32 artifact whose runtime is."""
    fp32 = [a for a in artifacts if a["precision"] == "fp32" and a["name"] not in refused and a["runtime"] != "tensorrt"]
    for artifact in sorted(fp32, key=lambda a: a["runtime"] != "torch"):
        if get_target(artifact["runtime"]).missing() is None:
            return artifact
    if any(a["precision"] == "fp32" and a["name"] in refused for a in artifacts):
        raise EdgesegError("the bundle's FP32 reference failed sha256 verification; drift cannot be measured "
                           f"({next(iter(refused.values()))})")
    raise EdgesegError("no FP32 artifact of this bundle can run here (install torch, onnxruntime or openvino)")


def _calibration(bundle: Path, manifest: dict, spec, dataset: NnUNetDataset, case_ids: list[str]):
    """``(calibration set, how it was obtained)`` for the INT8 baselines: the bundle's own calibration set —
    the one it carries (verified), or for an older bundle rebuilt from its recorded cases when ``dataset``
    holds them unchanged —, checked disjoint by content from the evaluated cases; never the evaluated cases."""
    from ..calibration import build_calibration_set, check_disjoint, read_bundled_calibration

    calib = read_bundled_calibration(bundle, manifest)
    if calib is not None:
        how = f"the bundle's calibration set ({len(next(iter(calib.inputs.values())))} samples, float16)"
    else:
        recipe = manifest.get("calibration") or {}
        cases = recipe.get("cases") or []
        if not (cases and not dataset.test and all(c in dataset.cases for c in cases)
                and dataset.fingerprint(cases) == recipe.get("fingerprint")):
            raise EdgesegError(f"the bundle carries no calibration set and {dataset.root} does not hold its "
                               f"{len(cases)} calibration cases unchanged; rebuild the bundle with this edgeseg")
        calib = build_calibration_set(dataset.root, spec.preprocessing, spec.spatial_dims, recipe.get("size", 64),
                                      recipe.get("strategy", "stratified"), recipe.get("seed", 0),
                                      sizes=[tuple(spec.preprocessing.size)], case_ids=cases)
        how = f"the bundle's calibration set, rebuilt from its {len(cases)} recorded cases in {dataset.root}"
    check_disjoint(calib, dataset, case_ids)
    return calib, how


def _calibration_overlap(recipe: dict, dataset: NnUNetDataset, case_ids: list[str]) -> list[str]:
    """Evaluated cases whose content is in the bundle's calibration set (by case id, in the calibration
    dataset, for bundles made before calibration sets recorded content hashes)."""
    from ..data.nnunet import content_overlap

    if isinstance(recipe.get("case_sha256"), dict):
        return sorted({ours for ours, _ in content_overlap(dataset.case_hashes(case_ids), recipe["case_sha256"])})
    return sorted(set(recipe.get("cases", [])) & set(case_ids)) if recipe.get("dataset") == dataset.name else []


def _jsonable(value):
    """NaN and ±inf become None (JSON has neither); tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def _accuracy(scores: dict | None, n_cases: int) -> dict | None:
    if scores is None:
        return None
    worst = {lab: {"case": c, "delta": d} for lab, (c, d) in scores["worst"].items()} if scores["worst"] else None
    return {"cases": n_cases, "mean": scores["mean"], "hd95_undefined": scores["hd95_undefined"],
            "drift": scores["drift_ci95"], "agreement": scores["agreement"], "worst_case": worst,
            "structure_changes": scores["structure_changes"], "per_case": scores["cases"]}


def _latency(lat: dict | None) -> dict | None:
    if not lat or "error" in lat:
        return None
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "batch", "warmup", "repeats", "throughput_per_s",
            "round_p50_ms")
    out = {"batch_1": {k: lat[k] for k in keys}, **lat.get("batches", {})}
    return {**out, "cold_start_s": lat["load_seconds"], "peak_rss_mb": lat["peak_rss_mb"], "rounds": lat["rounds"]}


def _workload(latency: dict) -> dict | None:
    """The fixed workload's timing in this run: ONNX Runtime's as ``latency``, every runtime's in
    ``by_runtime`` (null without latency or when the ONNX Runtime worker failed)."""
    from .workload import WORKLOAD_NAME, WORKLOAD_RUNTIMES, workload_key

    lat = _latency(latency.get(WORKLOAD_NAME))
    if not lat:
        return None
    by_runtime = {r: {"latency": {"batch_1": t["batch_1"]}} for r in WORKLOAD_RUNTIMES
                  if (t := _latency(latency.get(workload_key(r))))}
    return {"name": WORKLOAD_NAME, "runtime": "onnxruntime", "latency": {"batch_1": lat["batch_1"]},
            "by_runtime": by_runtime}


def _role(artifact: dict, reference: str) -> str:
    if artifact["name"] == reference:
        return "reference"
    return "baseline" if artifact.get("origin") == "baseline" or artifact["precision"] == "fp32" else "candidate"


def run_bench(cfg: BenchConfig) -> dict:
    """Measure a bundle on ``cfg.data``; returns the result (see ``benchmarks/SCHEMA.md``)."""
    start = time.perf_counter()
    bundle = Path(cfg.bundle)
    manifest = read_manifest(bundle)
    failed = failed_files(bundle)
    problems = [f"{path}: {reason}" for path, reason in failed.items()]
    refused = _refused(manifest, failed)
    spec = CheckpointSpec.from_dict({**manifest["model"], "preprocessing": manifest["preprocessing"]})
    dataset = NnUNetDataset(cfg.data, require_labels=False, test=cfg.split == "test")
    check_compatible(spec, dataset)
    check_limit_labels(cfg.limits, spec.label_names)
    case_ids = _cases(cfg, spec, dataset)
    backends = {get_target(b).name for b in cfg.backends}
    threads = latency_threads(cfg.threads)
    artifacts = [{**a, "origin": "bundle", "description": _describe(a)} for a in manifest["artifacts"]]
    reference = _choose_reference(artifacts, refused)
    artifacts = [a for a in artifacts if a is reference or not backends or a["runtime"] in backends]
    notes: list[str] = [f"{n}: sha256 verification failed ({p})" for n, p in refused.items()]
    overlap = _calibration_overlap(manifest.get("calibration") or {}, dataset, case_ids)

    with work_dir("edgeseg-bench") as work:
        baselines, skipped = [], []
        if cfg.compare_baselines:
            baselines, skipped = _baselines(bundle, manifest, reference, spec, dataset, case_ids, Path(work), notes,
                                            backends)
        if cfg.baseline_checkpoint:
            ckpt = Path(cfg.baseline_checkpoint).resolve()
            if not ckpt.is_file():
                raise EdgesegError(f"{ckpt}: baseline checkpoint not found")
            baselines.append({"name": f"baseline:{ckpt.stem}", "runtime": "torch", "precision": "fp32",
                              "files": {"model": ckpt.name}, "root": str(ckpt.parent), "profile": None, "device": "cpu",
                              "origin": "baseline", "external": True, "details": {"sha256": file_sha256(ckpt)},
                              "description": f"{ckpt.name}, PyTorch eager (e.g. the model before compression)"})
        candidates = [a for a in artifacts + baselines if a["name"] not in refused]
        thread_map = {a["name"]: threads for a in candidates}
        runners, others = load_runners(candidates, bundle, thread_map)
        if reference["name"] not in runners:
            raise EdgesegError(f"the reference {reference['name']} cannot run here: {others[reference['name']][1]}")
        sample = case_model_input(spec, dataset, case_ids[0])
        _smoke_test(runners, others, sample, reference["name"])
        _set_torch_threads(threads)
        console.print(f"[bold cyan]bench[/] {len(runners)} runnable of {len(candidates)} artifacts on {len(case_ids)} "
                      f"{dataset.name} {cfg.split} cases, {threads} threads")
        scores = compare_predictors(runners, reference["name"], spec, dataset, case_ids, "accuracy", full=True)
        timed = [a for a in candidates if a["name"] in runners and a["name"] not in others]
        latency = (_measure_latency(cfg, bundle, timed, sample, threads, dataset, case_ids, spec, Path(work))
                   if cfg.latency else {})
        states = {**{n: ("refused", [f"sha256 verification failed: {p}"]) for n, p in refused.items()},
                  **{n: (s, [reason]) for n, (s, reason) in others.items()},
                  **{s["name"]: (s["status"], s["notes"]) for s in skipped}}
        entries = [_entry(a, reference["name"], runners, states, scores, latency, len(case_ids), manifest)
                   for a in artifacts + baselines + skipped]
    noise = run_noise(_workload(latency))
    add_ratios(entries, reference["name"], noise["relative"])
    optional = {s["name"] for s in skipped if s.get("optional")}
    labels = spec.label_names
    device = device_fingerprint(threads)
    result = {"schema": RESULT_SCHEMA_NAME, "schema_version": RESULT_SCHEMA_VERSION,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "edgeseg_version": device["versions"].get("edgeseg", "unknown"),
              "command": cfg.command, "seconds": round(time.perf_counter() - start, 1),
              "bundle": {"path": str(bundle), "source_checkpoint": manifest.get("source_checkpoint"),
                         "manifest_sha256": file_sha256(bundle / MANIFEST),
                         "verification": {"ok": not problems, "problems": problems},
                         "pruning": (manifest.get("pruning") or {}).get("summary")},
              "data": {"dataset": dataset.name, "root": str(dataset.root), "split": cfg.split, "cases": case_ids,
                       "labelled": bool(scores[reference["name"]]["mean"] is not None),
                       "fingerprint": dataset.fingerprint(case_ids), "calibration_overlap": overlap},
              "model": {"arch": spec.arch, "spatial_dims": spec.spatial_dims, "in_channels": spec.in_channels,
                        "labels": labels, "input_size": list(spec.preprocessing.size),
                        "macs": (manifest.get("macs") or {}).get("final"), "params": (manifest.get("params") or {}).get("final")},
              "settings": {"threads": threads, "repeats": cfg.repeats, "rounds": cfg.rounds, "warmup": cfg.warmup,
                           "batch_sizes": [1] + ([cfg.batch_size] if cfg.batch_size > 1 else []),
                           "e2e_cases": min(cfg.e2e_cases, len(case_ids)) if cfg.latency else 0,
                           "backends": sorted(backends) or ["all"], "compare_baselines": cfg.compare_baselines,
                           "headline_label": headline_label(labels)},
              "device": device, "reference": reference["name"], "artifacts": entries, "workload": _workload(latency),
              "notes": notes + ([f"{len(overlap)} evaluated cases were in the bundle's calibration set"] if overlap else []),
              "incomplete": _incomplete([e for e in entries if e["name"] not in optional], cfg.latency)}
    result["verdict"] = bench_verdict(result, cfg.limits, noise)
    return _jsonable(result)


def _incomplete(entries: list[dict], latency_asked: bool) -> list[dict]:
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


def _describe(artifact: dict) -> str:
    profile = artifact.get("profile")
    if artifact["runtime"] == "torch" and artifact["precision"] == "fp32":
        return "FP32 model, PyTorch eager (the reference)"
    try:
        return load_profile(profile).description if profile else artifact["name"]
    except EdgesegError:
        return profile or artifact["name"]


def _baselines(bundle, manifest, reference, spec, dataset, case_ids, work, notes, backends):
    from .baselines import build_baselines

    fp32_onnx = next((bundle / a["files"]["model"] for a in manifest["artifacts"]
                      if a["runtime"] == "onnxruntime" and a["precision"] == "fp32"), None)
    try:
        calib, how = _calibration(bundle, manifest, spec, dataset, case_ids)
        calib = calib.inputs
        notes.append(f"INT8 baselines calibrated on {how}")
    except EdgesegError as exc:
        calib = None
        notes.append(f"INT8 baselines: no calibration set ({exc})")
    cuda = _cuda_available()
    if not cuda:
        notes.append("GPU baselines (PyTorch CUDA FP32/FP16) skipped: no CUDA GPU visible to PyTorch")
    console.print("[bold cyan]bench[/] building baselines: torch.compile, OpenVINO f32/default, ORT quantize_static "
                  "defaults, NNCF defaults")
    return build_baselines(bundle, manifest, reference, fp32_onnx, calib, work, cuda, tuple(spec.preprocessing.size),
                           backends)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _set_torch_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _smoke_test(runners: dict, others: dict, sample: np.ndarray, reference: str) -> None:
    """Run each loaded artifact once; one that fails is reported and left out, the reference must work."""
    for name in list(runners):
        try:
            out = runners[name](sample)
            if not np.isfinite(out).all():
                raise ValueError("non-finite logits")
        except Exception as exc:  # noqa: BLE001 — any runtime error disqualifies this artifact only
            if name == reference:
                raise EdgesegError(f"the reference {name} failed on the first case: {exc}") from None
            others[name] = ("not_measured", f"failed on the first case: {type(exc).__name__}: {str(exc)[:200]}")
            del runners[name]


def _measure_latency(cfg, bundle, timed, sample, threads: int, dataset, case_ids, spec, work: Path) -> dict:
    """Isolated latency of ``timed`` and, interleaved with them, of the fixed workload (:mod:`.workload`) on
    each of their CPU runtimes."""
    from .workload import workload_artifacts

    timed = [*timed, *workload_artifacts(work, {a["runtime"] for a in timed})]
    thread_map = {a["name"]: threads for a in timed}
    e2e = {"data": str(dataset.root), "cases": case_ids[: cfg.e2e_cases], "preprocessing": spec.preprocessing.to_dict(),
           "spatial_dims": spec.spatial_dims} if cfg.e2e_cases > 0 else None
    batches = (cfg.batch_size,) if cfg.batch_size > 1 else ()
    with progress_bar() as bar:
        task = bar.add_task("latency (one process per artifact and round)", total=len(timed) * cfg.rounds, info="")
        return measure_isolated(bundle, timed, sample, thread_map, repeats=cfg.repeats, rounds=cfg.rounds,
                                warmup=cfg.warmup, batch_sizes=batches, end_to_end=e2e,
                                progress=lambda: bar.advance(task))


def _entry(artifact, reference, runners, states, scores, latency, n_cases, manifest) -> dict:
    """One artifact's record in the result; ``states`` holds ``(status, notes)`` of those not fully measured."""
    name = artifact["name"]
    status, notes = states.get(name, ("measured", []))
    notes = list(notes)
    lat = latency.get(name)
    if lat and "error" in lat:
        notes.append(f"latency not measured: {lat['error']}")
    runner = runners.get(name)
    same_model = not artifact.get("external")  # baselines other than --baseline-checkpoint run the bundle's model
    return {"name": name, "origin": artifact.get("origin", "bundle"), "role": _role(artifact, reference),
            "runtime": artifact["runtime"], "precision": artifact["precision"], "profile": artifact.get("profile"),
            "device": artifact.get("device", "cpu"), "description": artifact.get("description", ""),
            "executed_precision": getattr(runner, "executed_precision", None),
            "status": status, "notes": notes,
            "size_bytes": _size(artifact),
            "params": (manifest.get("params") or {}).get("final") if same_model else None,
            "macs": (manifest.get("macs") or {}).get("final") if same_model else None,
            "accuracy": _accuracy(scores.get(name), n_cases) if name in runners else None,
            "latency": _latency(lat), "end_to_end": (lat or {}).get("end_to_end"),
            "ratios": {"model_speedup_vs_reference": None, "e2e_speedup_vs_reference": None}}


def _size(artifact: dict) -> int | None:
    if artifact.get("hashes"):
        return sum(h["bytes"] for h in artifact["hashes"].values())
    files = [Path(artifact["root"]) / f for f in artifact.get("files", {}).values()] if artifact.get("root") else []
    return sum(f.stat().st_size for f in files) if files and all(f.is_file() for f in files) else None

