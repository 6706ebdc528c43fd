"""``edgeseg bench``: every artifact of a bundle — and, on request, what users would pick instead — run on the
same cases: accuracy against ground truth and against the FP32 reference, model-only and end-to-end latency,
cold start, memory and size. Returns the result dict of ``benchmarks/SCHEMA.md`` (schema ``edgeseg-bench`` v1).
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.benchmark.entries import artifact_entry, describe, incomplete, workload_record
from edgeseg.benchmark.fingerprint import device_fingerprint
from edgeseg.benchmark.inputs import case_model_input, checkpoint_artifact, first_model_input
from edgeseg.benchmark.isolated import latency_threads
from edgeseg.benchmark.load import load_entries, load_verdict_line
from edgeseg.benchmark.measure import Measured, measure
from edgeseg.benchmark.ratios import add_ratios, run_noise
from edgeseg.benchmark.schema import RESULT_SCHEMA_NAME, RESULT_SCHEMA_VERSION
from edgeseg.benchmark.settings import check_bench_settings
from edgeseg.benchmark.verdict import bench_verdict, check_limit_labels
from edgeseg.bundle import MANIFEST, failed_files, manifest_artifacts, read_manifest
from edgeseg.checkpoint import CheckpointSpec
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import check_compatible, split_cases
from edgeseg.housekeeping import work_dir
from edgeseg.metrics import headline_label
from edgeseg.targets import get_target
from edgeseg.util import file_sha256, jsonable
from edgeseg.validation import paths_as_path

__all__ = ["BenchConfig", "BenchRun", "case_model_input", "first_model_input", "open_bench", "run_bench"]
log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """Everything ``edgeseg bench`` is given (its options; str paths are turned into ``Path``)."""

    bundle: Path
    data: Path
    split: str = "val"
    max_cases: int | None = None          # the first N cases of the split
    backends: list[str] = field(default_factory=list)  # runtimes to run; empty = all (the reference always runs)
    threads: int | None = None            # None: every core this process may use
    repeats: int = 50
    rounds: int = 6                       # the gate judges latency from ≥ 6 (edgeseg.gating.baseline.MIN_ROUNDS)
    warmup: int = 5
    batch_size: int = 8                   # the larger batch for throughput (0: batch 1 only)
    e2e_cases: int = 8
    latency: bool = True
    compare_baselines: bool = False
    baseline_checkpoint: Path | None = None  # e.g. the unpruned model, PyTorch eager
    command: str | None = None
    limits: dict = field(default_factory=dict)  # the verdict's Dice limits: max_dice_drop_points, per_label_points
    profile: bool = False                 # per-layer times from each runtime's profiler (edgeseg.benchmark.profile)
    load: tuple[float, ...] = ()          # shares of one core kept busy while timing again (edgeseg.benchmark.load)

    def __post_init__(self):
        paths_as_path(self)  # str paths from Python work as well as Path
        check_bench_settings(self)  # counts and limits that mean nothing: refused before anything runs


@dataclass
class BenchRun:
    """A bench run once its bundle is read and verified and its data opened: what every stage reads."""

    cfg: BenchConfig
    bundle: Path
    manifest: dict
    problems: list[str]                # "path: reason" of every file that failed verification
    refused: dict[str, str]            # artifact name → its first failed file
    spec: CheckpointSpec
    dataset: NnUNetDataset
    case_ids: list[str]
    backends: set[str]                 # runtimes asked for (empty: all)
    threads: int
    artifacts: list[Artifact]          # the bundle's artifacts to run (the reference always)
    reference: Artifact
    notes: list[str]
    overlap: list[str]                 # evaluated cases that were in the bundle's calibration set


def _refused(artifacts: list[Artifact], failed: dict[str, str]) -> dict[str, str]:
    """Artifacts with a file that failed sha256 verification → ``"path: reason"`` of the first such file."""
    out = {}
    for artifact in artifacts:
        hits = [f"{path}: {failed[path]}" for path in artifact.files.values() if path in failed]
        if hits:
            out[artifact.name] = hits[0]
    return out


def _cases(cfg: BenchConfig, spec, dataset: NnUNetDataset) -> list[str]:
    ids = split_cases(spec, dataset, cfg.split)
    ids = ids[: cfg.max_cases] if cfg.max_cases else ids
    if not ids:
        raise EdgesegError(f"{dataset.root}: no cases in split {cfg.split!r}")
    return ids


def _choose_reference(artifacts: list[Artifact], refused: dict) -> Artifact:
    """The FP32 PyTorch model when torch is here, else the first FP32 artifact whose runtime is."""
    fp32 = [a for a in artifacts if a.precision == "fp32" and a.name not in refused and a.runtime != "tensorrt"]
    for artifact in sorted(fp32, key=lambda a: a.runtime != "torch"):
        if get_target(artifact.runtime).missing() is None:
            return artifact
    if any(a.precision == "fp32" and a.name in refused for a in artifacts):
        raise EdgesegError("the bundle's FP32 reference failed sha256 verification; drift cannot be measured "
                           f"({next(iter(refused.values()))})")
    raise EdgesegError("no FP32 artifact of this bundle can run here (install torch, onnxruntime or openvino)")


def _calibration(bundle: Path, manifest: dict, spec, dataset: NnUNetDataset, case_ids: list[str]):
    """``(calibration set, how it was obtained)`` for the INT8 baselines: the bundle's own calibration set —
    the one it carries (verified), or for an older bundle rebuilt from its recorded cases when ``dataset``
    holds them unchanged —, checked disjoint by content from the evaluated cases; never the evaluated cases."""
    from edgeseg.calibration import build_calibration_set, check_disjoint, read_bundled_calibration

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
    from edgeseg.data.nnunet import content_overlap

    if isinstance(recipe.get("case_sha256"), dict):
        return sorted({ours for ours, _ in content_overlap(dataset.case_hashes(case_ids), recipe["case_sha256"])})
    return sorted(set(recipe.get("cases", [])) & set(case_ids)) if recipe.get("dataset") == dataset.name else []


def open_bench(cfg: BenchConfig) -> BenchRun:
    """Stage 1: read the bundle (every file verified, a failing artifact refused), open the data and choose its
    cases, the reference and the artifacts asked for."""
    bundle = Path(cfg.bundle)
    manifest = read_manifest(bundle)
    failed = failed_files(bundle)
    artifacts = manifest_artifacts(manifest)
    for artifact in artifacts:
        artifact.recorded.update(origin="bundle", description=describe(artifact))
    refused = _refused(artifacts, failed)
    spec = CheckpointSpec.from_manifest(manifest)
    dataset = NnUNetDataset(cfg.data, require_labels=False, test=cfg.split == "test")
    check_compatible(spec, dataset)
    check_limit_labels(cfg.limits, spec.label_names)
    case_ids = _cases(cfg, spec, dataset)
    backends = {get_target(b).name for b in cfg.backends}
    reference = _choose_reference(artifacts, refused)
    artifacts = [a for a in artifacts if a is reference or not backends or a.runtime in backends]
    return BenchRun(cfg, bundle, manifest, [f"{path}: {reason}" for path, reason in failed.items()], refused, spec,
                    dataset, case_ids, backends, latency_threads(cfg.threads), artifacts, reference,
                    [f"{n}: sha256 verification failed ({p})" for n, p in refused.items()],
                    _calibration_overlap(manifest.get("calibration") or {}, dataset, case_ids))


def add_baselines(run: BenchRun, work: Path) -> tuple[list[Artifact], list[Artifact]]:
    """Stage 2: ``(baselines, skipped)``: what users would pick instead (``compare_baselines``) and the
    ``baseline_checkpoint``, as artifacts to measure; ``skipped`` those that could not be built here."""
    cfg = run.cfg
    baselines, skipped = [], []
    if cfg.compare_baselines:
        baselines, skipped = _baselines(run, work)
    if cfg.baseline_checkpoint:
        ckpt = Path(cfg.baseline_checkpoint).resolve()
        if not ckpt.is_file():
            raise EdgesegError(f"{ckpt}: baseline checkpoint not found")
        baseline = checkpoint_artifact(ckpt, f"baseline:{ckpt.stem}", origin="baseline", external=True,
                                       description=f"{ckpt.name}, PyTorch eager (e.g. the model before compression)")
        baseline.details["sha256"] = file_sha256(ckpt)
        baselines.append(baseline)
    return baselines, skipped


def _entries(run: BenchRun, listed: list[Artifact], skipped: list[Artifact], measured: Measured) -> list[dict]:
    """Stage 4: one result entry per artifact, baseline and skipped baseline in ``listed``."""
    states = {**{n: ("refused", [f"sha256 verification failed: {p}"]) for n, p in run.refused.items()},
              **{n: (s, [reason]) for n, (s, reason) in measured.others.items()},
              **{s.name: (s.recorded["status"], s.recorded["notes"]) for s in skipped}}
    counts = {k: (run.manifest.get(k) or {}).get("final") for k in ("params", "macs")}  # the model after pruning
    return [artifact_entry(a, run.reference.name, measured.runners, states, measured.scores, measured.latency,
                           len(run.case_ids), counts) for a in listed]


def _result(run: BenchRun, entries: list[dict], measured: Measured, optional: set[str], start: float) -> dict:
    """Stage 5: the result document (``benchmarks/SCHEMA.md``), before its verdict."""
    cfg, manifest, dataset, labels = run.cfg, run.manifest, run.dataset, run.spec.label_names
    device = device_fingerprint(run.threads)
    overlap = run.overlap
    return {"schema": RESULT_SCHEMA_NAME, "schema_version": RESULT_SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "edgeseg_version": device["versions"].get("edgeseg", "unknown"),
            "command": cfg.command, "seconds": round(time.perf_counter() - start, 1),
            "bundle": {"path": str(run.bundle), "source_checkpoint": manifest.get("source_checkpoint"),
                       "manifest_sha256": file_sha256(run.bundle / MANIFEST),
                       "verification": {"ok": not run.problems, "problems": run.problems},
                       "pruning": (manifest.get("pruning") or {}).get("summary")},
            "data": {"dataset": dataset.name, "root": str(dataset.root), "split": cfg.split, "cases": run.case_ids,
                     "labelled": bool(measured.scores[run.reference.name]["mean"] is not None),
                     "fingerprint": dataset.fingerprint(run.case_ids), "calibration_overlap": overlap},
            "model": {"arch": run.spec.arch, "spatial_dims": run.spec.spatial_dims, "in_channels": run.spec.in_channels,
                      "labels": labels, "input_size": list(run.spec.preprocessing.size),
                      "macs": (manifest.get("macs") or {}).get("final"),
                      "params": (manifest.get("params") or {}).get("final")},
            "settings": {"threads": run.threads, "repeats": cfg.repeats, "rounds": cfg.rounds, "warmup": cfg.warmup,
                         "batch_sizes": [1] + ([cfg.batch_size] if cfg.batch_size > 1 else []),
                         "e2e_cases": min(cfg.e2e_cases, len(run.case_ids)) if cfg.latency else 0,
                         "backends": sorted(run.backends) or ["all"], "compare_baselines": cfg.compare_baselines,
                         "load": list(cfg.load) if cfg.latency else [],
                         "headline_label": headline_label(labels)},
            "device": device, "reference": run.reference.name, "artifacts": entries,
            "workload": workload_record(measured.latency),
            "notes": run.notes + ([f"{len(overlap)} evaluated cases were in the bundle's calibration set"]
                                  if overlap else []),
            "incomplete": incomplete([e for e in entries if e["name"] not in optional], cfg.latency)}


def run_bench(cfg: BenchConfig) -> dict:
    """Measure a bundle on ``cfg.data``; returns the result (see ``benchmarks/SCHEMA.md``): open → baselines →
    measure → entries → result and its verdict."""
    start = time.perf_counter()
    run = open_bench(cfg)
    with work_dir("edgeseg-bench") as work:
        baselines, skipped = add_baselines(run, Path(work))
        candidates = [a for a in run.artifacts + baselines if a.name not in run.refused]
        measured = measure(run, candidates, Path(work))
        entries = _entries(run, run.artifacts + baselines + skipped, skipped, measured)
        profile = _profile(run, measured) if cfg.profile else None
    noise = run_noise(workload_record(measured.latency))
    add_ratios(entries, run.reference.name, noise["relative"])
    load_entries(entries, measured.under_load)
    result = _result(run, entries, measured, {s.name for s in skipped if s.recorded.get("optional")}, start)
    result["verdict"] = bench_verdict(result, cfg.limits, noise)
    if line := load_verdict_line(result):
        result["verdict"]["lines"].append(line)
    if profile is not None:
        result["profile"] = profile
    return jsonable(result)


def _profile(run: BenchRun, measured: Measured) -> dict:
    """The bundle's own artifacts that ran, layer by layer (baselines live outside the bundle)."""
    from edgeseg.benchmark.inputs import case_model_input
    from edgeseg.benchmark.profile import profile_artifacts

    sample = case_model_input(run.spec, run.dataset, run.case_ids[0])
    return profile_artifacts(run.bundle, [a for a in run.artifacts if a.name in measured.runners], sample,
                             run.threads)


def _baselines(run: BenchRun, work: Path) -> tuple[list[Artifact], list[Artifact]]:
    """What users would pick instead (:mod:`.baselines`), built from the bundle's FP32 ONNX and calibrated on the
    bundle's own calibration set; what could not be had is noted."""
    from edgeseg.benchmark.baselines import build_baselines

    bundle, manifest = run.bundle, run.manifest
    fp32_onnx = next((bundle / a.files["model"] for a in manifest_artifacts(manifest)
                      if a.runtime == "onnxruntime" and a.precision == "fp32"), None)
    try:
        calib, how = _calibration(bundle, manifest, run.spec, run.dataset, run.case_ids)
        calib = calib.inputs
        run.notes.append(f"INT8 baselines calibrated on {how}")
    except EdgesegError as exc:
        calib = None
        run.notes.append(f"INT8 baselines: no calibration set ({exc})")
    cuda = _cuda_available()
    if not cuda:
        run.notes.append("GPU baselines (PyTorch CUDA FP32/FP16) skipped: no CUDA GPU visible to PyTorch")
    log.info("bench: building baselines: torch.compile, OpenVINO f32/default, ORT quantize_static defaults, NNCF "
             "defaults")
    return build_baselines(bundle, manifest_artifacts(manifest), run.reference, fp32_onnx, calib, work, cuda,
                           tuple(run.spec.preprocessing.size), run.backends)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
