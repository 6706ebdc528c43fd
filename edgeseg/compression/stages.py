"""``compress`` stages 2–5 on a :class:`CompressRun`: prune the model, export the FP32 ONNX (and choose the
float plans), build every profile's artifact into the staging folder, measure drift and latency of each.
Stage 1 is :mod:`edgeseg.compression.data`; :func:`edgeseg.compression.pipeline.compress` runs them in order and writes."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.benchmark.inputs import case_model_input, checkpoint_artifact
from edgeseg.benchmark.isolated import latency_threads, measure_isolated
from edgeseg.benchmark.runners import load_runners
from edgeseg.bundle import hash_files
from edgeseg.checkpoint import save_checkpoint
from edgeseg.compression.data import CompressData
from edgeseg.errors import EdgesegError, UsageError
from edgeseg.evaluation import compare_predictors
from edgeseg.inference import torch_predictor
from edgeseg.targets import get_target, load_profile
from edgeseg.targets.base import BuildRequest
from edgeseg.util import file_sha256

log = logging.getLogger(__name__)
ALWAYS_BUILT = ("torch-fp32", "x86-onnxruntime-fp32")  # the reference and the plain FP32 ONNX


@dataclass
class CompressRun:
    """What the stages share: the config, the model (pruned in place by stage 2) with its spec and the source
    checkpoint's sha256, the target profiles, the data of stage 1, the bundle's staging folder and a work folder."""

    cfg: object                        # edgeseg.compression.pipeline.CompressConfig
    model: object
    spec: object                       # edgeseg.checkpoint.CheckpointSpec
    source_sha: str
    profiles: list
    data: CompressData
    stage: Path
    work: Path
    onnx_source: bytes | None = None   # the FP32 ONNX given instead of a checkpoint (``model`` is None then)

    @property
    def size(self) -> tuple[int, ...]:
        """The spatial size the model was trained at."""
        return tuple(self.spec.preprocessing.size)

    @property
    def shape(self) -> tuple[int, ...]:
        """A batch-1 model input's shape."""
        return (1, self.spec.in_channels, *self.size)

    @property
    def reference_checkpoint(self) -> Path | None:
        """The (pruned) model as an edgeseg checkpoint, written by stage 2: the PyTorch reference's source (None
        for an ONNX model)."""
        return self.work / "reference.ckpt" if self.model is not None else None

    def metadata(self) -> dict[str, str]:
        """:func:`artifact_metadata` of this model."""
        return artifact_metadata(self.spec, self.source_sha)


def artifact_metadata(spec, source_sha: str) -> dict[str, str]:
    """Written into every artifact, so a copied file still says how to feed it and what it outputs."""
    return {"edgeseg.preprocessing": json.dumps(spec.preprocessing.to_dict()),
            "edgeseg.label_names": json.dumps(spec.label_names), "edgeseg.spatial_dims": str(spec.spatial_dims),
            "edgeseg.input": json.dumps({"name": "image", "layout": "NC" + "DHW"[3 - spec.spatial_dims:],
                                         "dtype": "float32", "channels": spec.in_channels}),
            "edgeseg.source_checkpoint_sha256": source_sha}


def prune_alignment(align: int | None, precision: str) -> int | None:
    """The multiple pruned widths are rounded to: ``align`` when given (0 or 1: none), else none.

    Not on by default for INT8 (issue K, benchmarks/results/issueK): at ``--prune 0.5`` on the chest model,
    ``--align 16`` keeps the full-resolution 16-channel stage whole (1.41 vs 0.87 GMACs); each MAC gets cheaper
    (OpenVINO INT8 −11 %, ONNX Runtime INT8 −37 % per GMAC on an AVX2 CPU) but the model gets slower
    (OpenVINO INT8 12.0 vs 8.4 ms)."""
    if align is None:
        return None
    if align < 0:
        raise UsageError(f"--align must be 0 (off) or a positive channel multiple, not {align}")
    return align if align > 1 else None


def prune_stage(run: CompressRun, manifest: dict) -> None:
    """Stage 2: with ``--prune``/``--prune-macs``, prune and recover the model in place (the report goes into
    ``manifest["pruning"]`` and the spec); the final MACs and parameters into the manifest either way; the model
    saved as :attr:`CompressRun.reference_checkpoint`."""
    cfg, data = run.cfg, run.data
    macs, params = manifest["macs"]["original"], manifest["params"]["original"]
    if run.model is None:  # an ONNX model: nothing to prune (refused before any work) or to save
        manifest["macs"]["final"], manifest["params"]["final"] = macs, params
        return
    from edgeseg.pruning import count_macs

    if cfg.prune or cfg.prune_macs:
        from edgeseg.pruning.pipeline import PruneSettings, prune_and_recover

        settings = PruneSettings(cfg.prune, cfg.prune_macs, cfg.finetune_epochs, cfg.finetune_minutes,
                                 min(cfg.calib_size, 64), prune_alignment(cfg.align, cfg.precision))
        calib_inputs = data.calib.inputs[run.size] if data.calib else None
        manifest["pruning"] = prune_and_recover(run.model, run.spec, settings, run.shape, data.dataset, data.eval_ids,
                                                data.train_dir, calib_inputs)
        run.spec.pruning = {"report": manifest["pruning"], "source_checkpoint_sha256": run.source_sha}
        macs, params = count_macs(run.model, run.shape)
    manifest["macs"]["final"], manifest["params"]["final"] = macs, params
    save_checkpoint(run.reference_checkpoint, run.model, run.spec)


def export_stage(run: CompressRun) -> tuple[Path, np.ndarray | None]:
    """Stage 3: the FP32 ONNX (dynamic batch and spatial size, the artifact metadata inside) and the inputs its
    parity with PyTorch is checked on (calibration samples, else the first evaluated cases; None without either)."""
    from edgeseg.onnx_export import export_onnx

    if run.model is None:
        fp32_onnx = _given_onnx(run)
    else:
        fp32_onnx = export_onnx(run.model, run.work / "model.fp32.onnx", (2, *run.shape[1:]), metadata=run.metadata())
    calib, data = run.data.calib, run.data
    if calib:
        return fp32_onnx, calib.inputs[run.size][:4]
    if data.eval_ids:
        return fp32_onnx, np.concatenate([case_model_input(run.spec, data.dataset, c) for c in data.eval_ids[:4]])
    return fp32_onnx, None


def _given_onnx(run: CompressRun) -> Path:
    """The ONNX model given, with this bundle's metadata written into it (what every artifact carries)."""
    import onnx

    from edgeseg.compression.onnx_source import with_standard_names
    from edgeseg.targets.onnxruntime_backend import write_metadata

    model = onnx.load_model_from_string(run.onnx_source)
    with_standard_names(model)
    write_metadata(model, run.metadata())
    path = run.work / "model.fp32.onnx"
    onnx.save(model, str(path))
    return path


def float_plans(run: CompressRun, fp32_onnx: Path) -> tuple[list[dict], dict[str, dict], dict | None]:
    """``(plan, plans, report)``: the float plan of ``--preset``/``--keep-float``/``--quantize``, and with
    accuracy-aware INT8 each profile's own ``{"float_nodes", "options"}`` found by the search, with its report
    (None without the search)."""
    import onnx

    from edgeseg.targets.float_nodes import plan_float_nodes

    cfg = run.cfg
    float_nodes = plan_float_nodes(onnx.load(str(fp32_onnx)), cfg.preset, cfg.keep_float, cfg.quantize_ops)
    if cfg.accuracy_aware is None or run.data.calib is None:
        return float_nodes, {}, None
    from edgeseg.tuning.accuracy_aware import TuningInputs, tune_float_plans

    log.info("accuracy-aware INT8 limits, mean Dice drop vs FP32 on the tuning cases (a structure that vanishes "
             "fails too): %s", cfg.accuracy_aware.limits.describe(run.spec.label_names[1:]))
    inputs = TuningInputs(run.model, run.spec, fp32_onnx, run.data.calib,
                          {"preset": cfg.preset, "keep_float": cfg.keep_float, "quantize": cfg.quantize_ops},
                          run.data.train_dir, run.data.dataset, run.data.eval_ids, cfg.threads, run.work / "tuning",
                          cfg.seed)
    return float_nodes, *tune_float_plans(cfg.accuracy_aware, run.profiles, inputs)


def build_profiles(profiles: list, torch_reference: bool = True) -> list:
    """Every profile built: the FP32 PyTorch reference (not for an ONNX model) and the plain FP32 ONNX first,
    then ``profiles``."""
    first = [name for name in ALWAYS_BUILT if torch_reference or name != ALWAYS_BUILT[0]]
    return [load_profile(name) for name in first] + [p for p in profiles if p.name not in ALWAYS_BUILT]


def build_stage(run: CompressRun, builds: list, fp32_onnx: Path, float_nodes: list[dict],
                plans: dict[str, dict]) -> list[Artifact]:
    """Stage 4: each profile's artifact built into the staging folder, hashed (measured below through the same
    verified reads) and timed; returns them in ``builds`` order."""
    calib = run.data.calib
    options = {"calibration_method": run.cfg.calib_method} if run.cfg.calib_method else {}
    artifacts = []
    for profile in builds:
        t0 = time.perf_counter()
        log.info("  building %s …", profile.name)
        plan = plans.get(profile.name, {})
        request = BuildRequest(fp32_onnx=fp32_onnx, out_dir=run.stage, profile=profile,
                               calibration=calib.inputs if calib else {}, model_size=run.size,
                               float_nodes=[] if profile.precision == "fp32" else plan.get("float_nodes", float_nodes),
                               metadata=run.metadata(), options={**options, **plan.get("options", {})},
                               checkpoint=run.reference_checkpoint)
        artifact = get_target(profile.target).build(request)
        artifact.recorded.update(hashes=hash_files(run.stage, artifact.files),
                                 build_seconds=round(time.perf_counter() - t0, 1))
        artifacts.append(artifact)
    return artifacts


def measure_artifacts(run: CompressRun, artifacts: list[Artifact], sample: np.ndarray) -> None:
    """Stage 5: drift vs the FP32 reference (PyTorch; ONNX Runtime for an ONNX model) on the evaluated cases and
    batch-1 latency of ``sample``, recorded into each artifact (with its executed precision and size)."""
    reference = artifacts[0].name  # PyTorch FP32, or ONNX Runtime FP32 for an ONNX model
    threads = {a.name: latency_threads(run.cfg.threads) for a in artifacts}  # as bench: one count for all
    runners, others = load_runners(artifacts, run.stage, threads, skip={reference} if run.model is not None else ())
    for artifact in artifacts:
        if artifact.name in others:
            status, reason = others[artifact.name]
            artifact.recorded["measured_with" if status == "accuracy_only" else "not_measured"] = reason
    if run.model is not None:
        import torch

        torch.set_num_threads(threads[reference] or torch.get_num_threads())
        runners = {reference: torch_predictor(run.model), **runners}
    elif reference not in runners:
        raise EdgesegError(f"the reference {reference} cannot run here: {others[reference][1]}")
    if run.data.dataset is not None and run.data.eval_ids:
        _record_drift(run, artifacts, runners, reference)
    _record_latency(run, artifacts, runners, threads, sample)
    for artifact in artifacts:
        runner = runners.get(artifact.name)
        artifact.recorded["executed_precision"] = (getattr(runner, "executed_precision", "fp32 (PyTorch eager)")
                                                   if runner else None)
        artifact.recorded["size_bytes"] = sum((run.stage / f).stat().st_size for f in artifact.model_files().values())


def _record_drift(run: CompressRun, artifacts: list[Artifact], runners: dict, reference: str) -> None:
    """Each runnable artifact's ``accuracy``: Dice, drift and agreement against the reference's masks."""
    data = run.data
    scores = compare_predictors(runners, reference, run.spec, data.dataset, data.eval_ids, "drift")
    for artifact in (a for a in artifacts if a.name in scores):
        s = scores[artifact.name]
        artifact.recorded["accuracy"] = {"cases": len(data.eval_ids), "held_back_cases": len(data.held_back),  # "n of N"
                                "dice": {k: v["dice"] for k, v in s["mean"].items()},
                                "drift_vs_fp32": s["drift"], "drift_ci95": s["drift_ci95"],
                                "agreement_vs_fp32": s["agreement"], "structure_changes": s["structure_changes"],
                                "worst_case": {k: {"case": c, "delta": d} for k, (c, d) in s["worst"].items()}}


def _record_latency(run: CompressRun, artifacts: list[Artifact], runners: dict, threads: dict, sample) -> None:
    """Batch-1 latency of every timed artifact, each in its own process, and of the baseline checkpoint when there
    is one (``--baseline-checkpoint``, by default the unpruned input when pruning: the speed-up a user gets)."""
    cfg, reference = run.cfg, artifacts[0].name
    timed = [a for a in artifacts if a.name in runners and "measured_with" not in a.recorded]
    baseline = cfg.baseline_checkpoint or (cfg.checkpoint if (cfg.prune or cfg.prune_macs) else None)
    if baseline:
        base = Path(baseline).resolve()
        timed.append(checkpoint_artifact(base, f"baseline {base.name}"))
        threads[timed[-1].name] = threads[reference]
    latency = measure_isolated(run.stage, timed, sample, threads, repeats=cfg.latency_repeats, rounds=3)
    if baseline:
        artifacts[0].recorded["baseline"] = {"checkpoint": Path(baseline).name, "sha256": file_sha256(baseline),
                                             "runtime": "torch", "latency": latency.pop(timed[-1].name)}
    for artifact in artifacts:
        if "error" in latency.get(artifact.name, {}):
            artifact.recorded["not_measured"] = latency.pop(artifact.name)["error"]
        if artifact.name in latency:
            artifact.recorded["latency"] = latency[artifact.name]
