"""``edgeseg compress``: prune → calibrate → quantize/convert per target → verified bundle, with its cost measured.

One path: checkpoint → (pruned) model → one FP32 ONNX → every target's artifact → drift and latency on the
held-back validation cases → ``manifest.json``. Built in a staging directory that replaces ``out`` at the end.
:func:`compress` runs the stages in order: data (:mod:`edgeseg.compression.data`), then prune, export, build and
measure (:mod:`edgeseg.compression.stages`), then write.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.benchmark.fingerprint import device_fingerprint
from edgeseg.bundle import check_replaceable, staging_dir, tool_versions, write_manifest
from edgeseg.calibration import CalibrationSet, bundle_calibration
from edgeseg.checkpoint import load_checkpoint, read_checkpoint_bytes
from edgeseg.compression.data import CompressData, input_layout, load_data
from edgeseg.compression.onnx_source import is_onnx, onnx_counts, read_onnx_model
from edgeseg.compression.stages import (
    ALWAYS_BUILT,
    CompressRun,
    artifact_metadata,
    build_profiles,
    build_stage,
    export_stage,
    float_plans,
    measure_artifacts,
    prune_alignment,
    prune_stage,
)
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.errors import EdgesegError, UsageError
from edgeseg.housekeeping import work_dir
from edgeseg.targets import default_targets, get_target, load_profile
from edgeseg.validation import paths_as_path

log = logging.getLogger(__name__)
STAGES = 6


@dataclass
class CompressConfig:
    """Everything ``edgeseg compress`` is given (its options; str paths are turned into ``Path``)."""

    checkpoint: Path
    out: Path
    precision: str = "int8"
    targets: list[str] = field(default_factory=default_targets)  # the registry's (onnxruntime, openvino, tensorrt)
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
    align: int | None = None                # pruned widths to multiples of this; None or 0: unrounded
    keep_float: list[str] = field(default_factory=list)
    quantize_ops: list[str] = field(default_factory=list)
    preset: bool = True
    baseline_checkpoint: Path | None = None              # also time this model's PyTorch eager (default when pruning: the input)
    accuracy_aware: object | None = None                 # edgeseg.tuning.accuracy_aware.AccuracyAwareSettings
    threads: int | None = None
    latency_repeats: int = 30
    seed: int = 0
    force: bool = False
    spec_file: Path | None = None                        # an ONNX model's spec, when its metadata has none
    trust_code: bool = False                             # load TorchScript / ExportedProgram files (they run code)

    def __post_init__(self):
        paths_as_path(self)  # str paths from Python work as well as Path


def resolve_profiles(cfg: CompressConfig) -> list:
    """The target profiles to build: ``cfg.profiles``, else each target's default one at ``cfg.precision``; each
    must be buildable here."""
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


def resolve_data(cfg: CompressConfig, spec,
                 sizes) -> tuple[NnUNetDataset | None, list[str], CalibrationSet | None, Path | None]:
    """:func:`edgeseg.compression.data.load_data` as ``(dataset, eval_ids, calibration set, training folder)``."""
    data = load_data(cfg, spec, sizes)
    return data.dataset, data.eval_ids, data.calib, data.train_dir


def _stage(n: int, text: str) -> None:
    log.info("[%d/%d] %s", n, STAGES, text)


def _manifest_head(cfg: CompressConfig, spec, source_sha: str, data: CompressData, shape: tuple[int, ...],
                   counts: tuple[int, int]) -> dict:
    """What the manifest records before any stage ran: the source model, its input (``shape``), MACs and parameters
    (``counts``), the calibration set; the stages fill in the rest (pruning, artifacts …)."""
    macs, params = counts
    return {"source_checkpoint": {"name": Path(cfg.checkpoint).name, "sha256": source_sha},
            "model": {k: v for k, v in spec.to_dict().items() if k not in ("metrics", "training", "preprocessing")},
            "preprocessing": spec.preprocessing.to_dict(), "labels": spec.label_names,
            "input": json.loads(artifact_metadata(spec, "")["edgeseg.input"]) | {"shape": list(shape)}
            | input_layout(spec, data),
            "macs": {"original": macs}, "params": {"original": params},
            "calibration": data.calib.manifest if data.calib else None, "pruning": None, "artifacts": [],
            **({"imported": spec.training["imported"]} if "imported" in spec.training else {})}


@dataclass
class Source:
    """What compress starts from: an edgeseg ``model`` with its ``spec`` — or, for an ONNX file or a TorchScript /
    ExportedProgram (``kind``), no model and the FP32 ``onnx`` bytes (the ``program`` kept for parity) — and
    ``data``, the bytes hashed as the source."""

    model: object | None
    spec: object
    data: bytes
    onnx: bytes | None = None
    program: object | None = None
    kind: str = "checkpoint"


def _load_source(cfg: CompressConfig) -> Source:
    """A checkpoint (a foreign model imported first); an FP32 ONNX file or a trusted TorchScript / ExportedProgram
    with a spec (no torch module: no pruning, ONNX Runtime FP32 is the reference)."""
    from edgeseg.compression.torch_program import program_kind

    kind = "ONNX" if is_onnx(cfg.checkpoint) else program_kind(cfg.checkpoint)
    if kind is None:
        if cfg.spec_file is not None:
            raise UsageError("--spec describes an ONNX, TorchScript or ExportedProgram model; a checkpoint carries "
                             "its own spec")
        source = _source_bytes(cfg)
        model, spec = load_checkpoint(source, str(cfg.checkpoint))  # the very bytes that were hashed
        return Source(model, spec, source)
    for asked, what in ((cfg.prune or cfg.prune_macs, "--prune"), (cfg.accuracy_aware, "--max-dice-drop"),
                        (cfg.baseline_checkpoint, "--baseline-checkpoint")):
        if asked:
            raise UsageError(f"{what} needs an edgeseg model; {cfg.checkpoint.name} is {kind} (import the PyTorch "
                             "weights instead: docs/import.md)")
    if kind == "ONNX":
        data, spec = read_onnx_model(cfg.checkpoint, cfg.spec_file)
        return Source(None, spec, data, data, kind=kind)
    return _program_source(cfg, kind)


def _program_source(cfg: CompressConfig, kind: str) -> Source:
    from edgeseg.compression.onnx_source import check_onnx, spec_from_file
    from edgeseg.compression.torch_program import load_program, program_onnx

    if cfg.spec_file is None:
        raise UsageError(f"{cfg.checkpoint.name} is {kind}: pass --spec FILE with its labels and preprocessing "
                         "(docs/import.md)")
    spec = spec_from_file(cfg.spec_file)
    program = load_program(cfg.checkpoint, kind, cfg.trust_code)
    with work_dir("edgeseg-program") as tmp:
        onnx_bytes = program_onnx(program, kind, spec, Path(tmp))
    check_onnx(onnx_bytes, spec, cfg.checkpoint.name)
    return Source(None, spec, cfg.checkpoint.read_bytes(), onnx_bytes, program, kind)


def _source_bytes(cfg: CompressConfig) -> bytes:
    """The checkpoint's bytes; a model of another framework is imported first (:mod:`edgeseg.importers`), checked
    on the evaluation (or calibration) data against the framework's own inference."""
    from edgeseg.importers import import_model, is_foreign

    if not is_foreign(cfg.checkpoint):
        return read_checkpoint_bytes(cfg.checkpoint)
    data = cfg.eval_data or (cfg.calib if cfg.calib is not None and Path(cfg.calib).is_dir() else None)
    with work_dir("edgeseg-import") as tmp:
        path, _ = import_model(cfg.checkpoint, Path(tmp) / f"{Path(cfg.checkpoint).name}.ckpt", data=data)
        return read_checkpoint_bytes(path)


def _record_build(run: CompressRun, manifest: dict, artifacts: list[Artifact], float_nodes: list[dict], builds: list,
                  start: float) -> None:
    """The manifest's record of what was built, how, where and in how long."""
    cfg = run.cfg
    manifest.update(artifacts=[a.to_dict() for a in artifacts], float_nodes=float_nodes, preset=cfg.preset,
                    keep_float=cfg.keep_float, quantize_ops=cfg.quantize_ops, targets=[p.name for p in run.profiles],
                    profiles={p.name: p.to_dict() for p in builds}, tool_versions=tool_versions(),
                    device=device_fingerprint(cfg.threads),
                    evaluation={"dataset": run.data.dataset.name if run.data.dataset else None,
                                "cases": run.data.eval_ids},
                    compress_seconds=round(time.perf_counter() - start, 1))


def write_stage(run: CompressRun, manifest: dict) -> dict:
    """Stage 6: the calibration set carried in the bundle (INT8), then every file hashed into ``manifest.json``."""
    if run.data.calib is not None:
        bundle_calibration(run.stage, manifest, run.data.calib, run.size)
    return write_manifest(run.stage, manifest)


def compress(cfg: CompressConfig) -> dict:
    """Run the whole pipeline — data → prune → export → build → measure → write, one function per stage — in a
    staging folder that replaces ``cfg.out`` at the end; returns the manifest written there."""
    start = time.perf_counter()
    src = _load_source(cfg)
    model, spec, source = src.model, src.spec, src.data
    if model is not None:
        from edgeseg.pruning import count_macs
    source_sha = hashlib.sha256(source).hexdigest()
    profiles = resolve_profiles(cfg)
    sizes = deployment_sizes(profiles, spec.preprocessing.size)
    prune_alignment(cfg.align, cfg.precision)  # a bad --align: refused before any work
    check_replaceable(cfg.out, cfg.force)  # before any work: a folder edgeseg did not write is never replaced
    _stage(1, "data: evaluation cases and calibration set")
    data = load_data(cfg, spec, sizes)
    shape = (1, spec.in_channels, *spec.preprocessing.size)
    counts = count_macs(model, shape) if model is not None else onnx_counts(src.onnx)
    manifest = _manifest_head(cfg, spec, source_sha, data, shape, counts)
    with staging_dir(cfg.out, cfg.force) as stage, work_dir("edgeseg-work") as work:
        run = CompressRun(cfg, model, spec, source_sha, profiles, data, stage, Path(work),
                          onnx_source=src.onnx)
        _stage(2, "prune" if (cfg.prune or cfg.prune_macs) else "prune: skipped (no --prune)")
        prune_stage(run, manifest)
        _stage(3, "export FP32 ONNX and check parity with PyTorch" if model is not None else
               f"the FP32 ONNX {'given' if src.program is None else 'of the ' + src.kind}")
        fp32_onnx, parity_inputs = export_stage(run)
        float_nodes, plans, tuning = float_plans(run, fp32_onnx)
        if tuning is not None:
            manifest["accuracy_aware"] = tuning
        builds = build_profiles(profiles, torch_reference=model is not None)
        _stage(4, f"build {len(builds)} artifacts: {', '.join(p.name for p in builds)}")
        artifacts = build_stage(run, builds, fp32_onnx, float_nodes, plans)
        if parity_inputs is not None and (model or src.program) is not None:
            from edgeseg.onnx_export import onnx_parity

            fp32 = next(a for a in artifacts if a.name == ALWAYS_BUILT[1])  # the plain FP32 ONNX
            if model is not None:
                fp32.recorded["parity_vs_torch"] = onnx_parity(model, stage / fp32.files["model"], parity_inputs)
            else:  # a program may be specialized to batch 1: one sample at a time
                each = [onnx_parity(src.program, stage / fp32.files["model"], x[None]) for x in parity_inputs]
                fp32.recorded["parity_vs_torch"] = {"max_abs_diff": max(e["max_abs_diff"] for e in each),
                                                    "mask_agreement": float(np.mean([e["mask_agreement"]
                                                                                     for e in each]))}
        _stage(5, f"measure drift on {len(data.eval_ids)} held-back validation cases and latency")
        sample = parity_inputs[:1] if parity_inputs is not None else np.zeros(run.shape, np.float32)
        measure_artifacts(run, artifacts, sample)
        _record_build(run, manifest, artifacts, float_nodes, builds, start)
        _stage(6, f"write bundle {cfg.out}")
        manifest = write_stage(run, manifest)
    return manifest
