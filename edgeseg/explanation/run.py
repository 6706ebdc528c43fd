"""``edgeseg explain``: does each artifact of a bundle still look where the FP32 model looked?

For the chosen cases of a dataset split: the reference (the bundle's FP32 PyTorch model, or ``--baseline-checkpoint``
such as the model before pruning) and every artifact are explained the same way — occlusion and RISE maps through
each artifact's own runtime, Grad-CAM for PyTorch models — the methods are sanity-checked, and the drift of each map
against the reference's is measured per label and case, with the Dice drift and the calibration of the same runs.
Returns the result dict (schema ``edgeseg-explain`` v1); :mod:`edgeseg.explanation.report` writes it out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError, UsageError
from edgeseg.explanation.case_maps import FORWARD_METHODS, case_maps, reference_regions
from edgeseg.explanation.maps import MapSettings, rise_masks
from edgeseg.explanation.metrics import Calibration, map_drift
from edgeseg.explanation.sanity import check_methods, randomized_model
from edgeseg.explanation.summary import summarize
from edgeseg.progress import track
from edgeseg.validation import paths_as_path


@dataclass
class ExplainConfig:
    """What ``edgeseg explain`` is given."""

    bundle: Path
    data: Path
    split: str = "val"
    cases: int | None = 32  # the first N cases of the split (None: all)
    labels: list[str] = field(default_factory=list)  # label names to explain (empty: every foreground label)
    artifacts: list[str] = field(default_factory=list)  # artifact names (empty: every one that runs here)
    baseline_checkpoint: Path | None = None  # the reference instead of the bundle's FP32 model
    threads: int | None = 2
    settings: MapSettings = field(default_factory=MapSettings)
    sanity_cases: int = 2
    samples_per_volume: int = 4  # a volume: its slices (2D model) or windows (3D) with the most predicted foreground
    gradcam_plus_plus: bool = False  # also Grad-CAM++ maps (no extra backward pass; its curves: more forward passes)

    def __post_init__(self):
        paths_as_path(self)


@dataclass
class Explained:
    """One model being explained: its runner, its PyTorch module (Grad-CAM) and what it gave so far."""

    name: str
    run: object
    model: object = None
    cases: dict = field(default_factory=dict)  # case id → ModelMaps
    scores: dict = field(default_factory=dict)  # case id → Dice/IoU per label of the host-path mask (labelled data)
    calibration: Calibration | None = None
    seconds: float = 0.0
    passes: int = 0
    forward_by: str | None = None  # the artifact whose runtime made the forward-only maps, when not this model
    probe: object = None  # batch → {attention gate: coefficients} (edgeseg.explanation.attention), when it has gates
    attention: dict = field(default_factory=dict)  # case id → {gate: coefficients}


def _open(cfg: ExplainConfig):
    from edgeseg.benchmark.harness import BenchConfig, open_bench

    if cfg.cases is not None and cfg.cases < 1:
        raise UsageError("--cases must be ≥ 1")
    run = open_bench(BenchConfig(bundle=cfg.bundle, data=cfg.data, split=cfg.split, max_cases=cfg.cases,
                                 threads=cfg.threads, latency=False, baseline_checkpoint=cfg.baseline_checkpoint))
    if run.reference.runtime != "torch":
        raise EdgesegError("explain needs PyTorch for its reference (Grad-CAM, the randomized-weights check): "
                           "pip install torch")
    unknown = sorted(set(cfg.artifacts) - {a.name for a in run.artifacts})
    if unknown:
        raise UsageError(f"no artifact {', '.join(unknown)} in {run.bundle}; it has "
                         f"{', '.join(a.name for a in run.artifacts)}")
    names = run.spec.label_names[1:]
    bad = sorted(set(cfg.labels) - set(names))
    if bad:
        raise UsageError(f"unknown label {', '.join(bad)}; the model's labels are {', '.join(names)}")
    return run


def _models(cfg: ExplainConfig, run) -> tuple[Explained, list[Explained], dict[str, str]]:
    """``(reference, artifacts, not explained → why)``."""
    from edgeseg.benchmark.inputs import checkpoint_artifact
    from edgeseg.benchmark.runners import load_runners

    stand_in = _forward_stand_in(cfg, run)
    chosen = [a for a in run.artifacts if not cfg.artifacts or a.name in cfg.artifacts or a in (run.reference, stand_in)]
    chosen = [a for a in chosen if a.name not in run.refused]
    if cfg.baseline_checkpoint is not None:
        chosen.append(checkpoint_artifact(cfg.baseline_checkpoint, "baseline-checkpoint"))
    threads = {a.name: run.threads for a in chosen}
    runners, others = load_runners(chosen, run.bundle, threads)
    skipped = {name: why for name, (status, why) in others.items() if status == "not_measured"}
    skipped.update({name: f"sha256 verification failed ({why})" for name, why in run.refused.items()})
    skipped.update({name: f"{why}: a stand-in runtime, not the artifact's own" for name, (status, why) in others.items()
                    if status == "accuracy_only"})
    models = {name: Explained(name, runner, getattr(runner, "model", None)) for name, runner in runners.items()
              if name not in skipped}
    ref_name = "baseline-checkpoint" if cfg.baseline_checkpoint is not None else run.reference.name
    if ref_name not in models:
        raise EdgesegError(f"the reference {ref_name} cannot run here: {skipped.get(ref_name, 'not loaded')}")
    reference = models.pop(ref_name)
    if stand_in is not None and stand_in.name in models:
        reference.run, reference.forward_by = models.pop(stand_in.name).run, stand_in.name
    return reference, list(models.values()), skipped


def _forward_stand_in(cfg: ExplainConfig, run):
    """The bundle's FP32 ONNX Runtime model, which makes the reference's forward-only maps when the reference is
    the bundle's own FP32 PyTorch model: the same weights (its masks match exactly), about twice as fast as eager
    on a CPU. Not when it was asked for as an artifact to explain, nor for a ``--baseline-checkpoint``."""
    if cfg.baseline_checkpoint is not None:
        return None
    return next((a for a in run.artifacts if a.runtime == "onnxruntime" and a.precision == "fp32"
                 and a.name not in cfg.artifacts and a.name not in run.refused), None)


def _methods(reference: Explained, plus_plus: bool) -> list[str]:
    from edgeseg.explanation.gradcam import GRADIENT_VARIANTS, gradcam_layers

    layers = gradcam_layers(reference.model) or {}
    variants = GRADIENT_VARIANTS if plus_plus else GRADIENT_VARIANTS[:1]
    return [*FORWARD_METHODS, *(f"{v}:{layer}" for v in variants for layer in layers)]


def _attention_probes(run, reference: Explained, artifacts: list[Explained]) -> dict | None:
    """Give each model its attention-gate probe; the result's record ``{"gates", "not_read": {name: why}}``, or
    None when the reference has no attention gates."""
    from edgeseg.bundle.members import artifact_bytes
    from edgeseg.explanation.attention import artifact_probe, gate_modules, gate_tensors, torch_probe

    gates = gate_modules(reference.model) if reference.model is not None else {}
    if not gates:
        return None
    reference.probe, record = torch_probe(reference.model, gates), {"gates": list(gates), "not_read": {}}
    fp32 = next((a for a in run.artifacts if a.runtime == "onnxruntime" and a.precision == "fp32"
                 and a.name not in run.refused), None)
    tensors = gate_tensors(artifact_bytes(run.bundle, fp32, "model"), list(gates)) if fp32 else {}
    by_name = {a.name: a for a in run.artifacts}
    for model in artifacts:
        if model.model is not None and (own := gate_modules(model.model)):  # a PyTorch artifact: the pruned model
            model.probe = torch_probe(model.model, own)
        elif model.name in by_name and tensors:
            probe = artifact_probe(run.bundle, by_name[model.name], tensors, run.threads)
            if isinstance(probe, str):
                record["not_read"][model.name] = probe
            else:
                model.probe = probe
        else:
            record["not_read"][model.name] = ("the gates' tensors were not found (the bundle's FP32 ONNX names "
                                              "them)" if model.name in by_name else "not a bundle artifact")
    return record


def _explain_case(models: list[Explained], methods, x, regions, settings, masks, cid) -> None:
    for model in models:
        maps = case_maps(model.run, model.model, x, regions, settings, masks, tuple(methods))
        model.cases[cid], model.seconds, model.passes = maps, model.seconds + maps.seconds, model.passes + maps.passes


def _host_path(models: list[Explained], run, case, labels: int) -> None:
    """Each model's probabilities in the case's geometry (the inference path): calibration and the Dice drift."""
    from edgeseg.explanation.maps import softmax
    from edgeseg.inference import predict_logits
    from edgeseg.metrics import case_scores

    for model in models:
        logits = predict_logits(model.run, case.image, run.spec.preprocessing, run.spec.spatial_dims,
                                spacing=case.geometry.spacing)
        probs = softmax(logits[None])[0]
        if case.label is not None:
            model.calibration = model.calibration or Calibration(labels)
            model.calibration.add(probs, case.label)
            model.scores[case.case_id] = case_scores(probs.argmax(0), case.label, run.spec.label_names)


def _sanity(reference: Explained, methods, inputs: list, settings, masks) -> dict:
    """The sanity checks on the first cases: the reference again, and with random weights."""
    from edgeseg.inference import torch_predictor

    again = Explained("again", reference.run, reference.model)
    random_model = randomized_model(reference.model, settings.seed)
    randomized = Explained("randomized", torch_predictor(random_model), random_model)
    trained = []
    for cid, x, regions in inputs:
        _explain_case([again, randomized], methods, x, regions, settings, masks, cid)
        trained.append(reference.cases[cid].maps)
    return check_methods(methods, trained, [again.cases[c].maps for c, _, _ in inputs],
                         [randomized.cases[c].maps for c, _, _ in inputs])


@dataclass
class ExplainOutcome:
    """``result``: the JSON-ready dict; the rest (maps, model inputs) is what the report's pictures are drawn from."""

    result: dict
    reference: Explained
    artifacts: list[Explained]
    inputs: dict  # case id → (model input, reference regions)


def run_explain(cfg: ExplainConfig) -> ExplainOutcome:
    """Explain the reference and every artifact on the chosen cases (schema ``edgeseg-explain`` v1)."""
    start = time.perf_counter()
    run = _open(cfg)
    reference, artifacts, skipped = _models(cfg, run)
    attention = _attention_probes(run, reference, artifacts)
    methods, labels = _methods(reference, cfg.gradcam_plus_plus), len(run.spec.label_names) - 1
    settings, everyone = cfg.settings, [reference, *artifacts]
    sanity_inputs, masks, inputs = [], None, {}
    for cid in track(run.case_ids, f"explain {len(everyone)} model(s)"):
        case = run.dataset.load(cid)
        for sample_id, x in _samples(run, reference, case, cfg.samples_per_volume):
            masks = rise_masks(x.shape[1:], settings) if masks is None or masks.shape[1:] != x.shape[1:] else masks
            regions = reference_regions(reference.run, x, labels)
            _explain_case(everyone, methods, x, regions, settings, masks, sample_id)
            for model in (m for m in everyone if m.probe is not None):
                model.attention[sample_id] = {gate: alpha[0] for gate, alpha in model.probe(x[None]).items()}
            inputs[sample_id] = (x, regions)
            if len(sanity_inputs) < cfg.sanity_cases and regions.any():
                sanity_inputs.append((sample_id, x, regions))
        _host_path(everyone, run, case, labels)
    sanity = _sanity(reference, methods, sanity_inputs, settings, masks)
    drift = {a.name: _drift(reference, a, methods, list(inputs)) for a in artifacts}
    result = summarize(cfg, run, reference, artifacts, skipped, methods, sanity, drift, time.perf_counter() - start,
                       attention, list(inputs))
    return ExplainOutcome(result, reference, artifacts, inputs)


def _samples(run, reference: Explained, case, per_volume: int) -> list[tuple[str, np.ndarray]]:
    """What is explained of a case: ``(id, model input)``. An image is one input; a volume (slices of a 2D model,
    windows of a 3D one) gives ``per_volume`` inputs where the reference predicts foreground, spread over it (the
    fullest of each of ``per_volume`` consecutive runs), in order, as ``CASE#INDEX`` — the first slice of a brain
    MRI has nothing to explain."""
    from edgeseg.benchmark.inputs import model_inputs
    from edgeseg.evaluation import naming_case_file

    with naming_case_file(run.dataset, case.case_id):
        samples = model_inputs(run.spec, case.image, case.geometry.spacing)
    if len(samples) == 1:
        return [(case.case_id, samples[0])]
    foreground = [int((reference.run(x[None])[0].argmax(0) > 0).sum()) for x in samples]
    predicted = [i for i, n in enumerate(foreground) if n > 0]
    # spread over the structure: the inputs with foreground cut into per_volume runs, the fullest of each
    runs = np.array_split(np.array(predicted), min(per_volume, len(predicted))) if predicted else []
    chosen = [int(max(part, key=lambda i: foreground[i])) for part in runs] or [len(samples) // 2]
    return [(f"{case.case_id}#{i}", samples[i]) for i in chosen]


def _drift(reference: Explained, artifact: Explained, methods, case_ids) -> dict:
    """``{method: {case: [per label: {rank_correlation, top10_iou, deletion_auc_change, insertion_auc_change} |
    None]}}`` (None: the label is not predicted by the reference on that case)."""
    out = {}
    for method in methods:
        per_case = {}
        for cid in case_ids:
            ref, art = reference.cases[cid], artifact.cases[cid]
            if method not in ref.maps or method not in art.maps:
                continue
            rows = []
            for label in range(len(ref.maps[method])):
                if not np.any(ref.maps[method][label]) and not np.any(art.maps[method][label]):
                    rows.append(None)
                    continue
                row = map_drift(ref.maps[method][label], art.maps[method][label])
                for kind in ("deletion", "insertion"):
                    row[f"{kind}_auc_change"] = art.auc[method][kind][label] - ref.auc[method][kind][label]
                rows.append(row)
            per_case[cid] = rows
        out[method] = per_case
    return out
