"""Per-node Dice sensitivity of INT8 quantization: which layers cost Dice when they run in INT8.

Measured on the ONNX Runtime QDQ model (the ``x86-onnxruntime-int8`` settings; the same QDQ placement the
TensorRT artifact uses), one variant per quantized node, calibrated once (ONNX Runtime's calibration cache),
scored on a fixed set of tuning cases that are disjoint from the calibration set and from the validation
cases reported to the user:

- ``quantize-one`` (default): start from FP32 and quantize one node alone; its cost = the Dice it loses on
  its own.
- ``float-one``: start from the all-INT8 model and keep one node float; its cost = the Dice that comes back.

Why ``quantize-one`` is the default: ONNX Runtime's QDQ quantizer also quantizes a Conv's *output*, so keeping
one node float does not make its input float while its producer stays INT8. On a model with one activation
given a huge outlier range (the test's fragile model) all-INT8 lost 47 lesion Dice points, ``float-one``
found no node worth more than 0.07, and ``quantize-one`` ranked the two convs around that tensor first
(47.4 points each, every other node < 0.3).
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgeseg.calibration import (
    CalibrationSet,
    build_calibration_set,
    check_disjoint,
    check_preprocessing,
    load_calibration,
)
from edgeseg.checkpoint import load_checkpoint
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import check_compatible, held_back_cases, is_training_dataset
from edgeseg.housekeeping import work_dir
from edgeseg.metrics import headline_label
from edgeseg.progress import track
from edgeseg.tuning.scorer import TuningScorer, tuning_cases
from edgeseg.util import file_sha256

log = logging.getLogger(__name__)

MODES = ("float-one", "quantize-one")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
SCHEMA, SCHEMA_VERSION = "edgeseg-sensitivity", 1


@dataclass
class SensitivityConfig:
    checkpoint: Path
    calib: Path                 # dataset folder or `edgeseg calibrate` .npz
    data: Path                  # tuning data (labelled)
    split: str = "train"
    cases: int = 16
    mode: str = "quantize-one"
    calib_size: int = 64
    preset: bool = True         # the fragile-ops preset stays float in every variant
    threads: int | None = None
    seed: int = 0


def load_or_build_calibration(calib: Path, spec, size: int, seed: int) -> CalibrationSet:
    """A calibration set from a dataset folder (training cases minus the checkpoint's validation cases) or a
    ``.npz`` written by ``edgeseg calibrate`` (checked against the checkpoint's preprocessing)."""
    calib = Path(calib)
    if not calib.exists():
        raise EdgesegError(f"{calib}: calibration data not found")
    sizes = [tuple(spec.preprocessing.size)]
    if calib.is_file():
        loaded = load_calibration(calib)
        check_preprocessing(loaded, spec.preprocessing, sizes)
        return loaded
    source = NnUNetDataset(calib)
    own = is_training_dataset(spec, source)
    return build_calibration_set(calib, spec.preprocessing, spec.spatial_dims, size, "stratified", seed, "train",
                                 held_back_cases(spec, source) if own else [], sizes,
                                 spec.data.get("train_cases") if own else None)


def quantized_nodes(qdq_model, source_model) -> list[dict]:
    """Compute nodes of a QDQ model that run in INT8 (an input comes from a DequantizeLinear), with the
    PyTorch module each came from (recorded in ``source_model``, the exported FP32 graph)."""
    from edgeseg.targets.float_nodes import node_info

    source = {n.name: node_info(n) for n in source_model.graph.node}
    dequantized = {o for n in qdq_model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    nodes = []
    for n in qdq_model.graph.node:
        if n.op_type in QUANTIZED_OPS and dequantized & set(n.input):
            # a ConvTranspose rewritten for ONNX Runtime (X → X_conv1x1 + X_d2s) is named as in the source graph,
            # where keeping X float also keeps it out of the rewrite
            name = n.name.removesuffix("_conv1x1") if n.name.removesuffix("_conv1x1") in source else n.name
            info = source.get(name, {"op_type": n.op_type, "module": ""})
            nodes.append({"name": name, "op_type": info["op_type"], "module": info["module"]})
    return nodes


def _costs(mode: str, base: dict, variant: dict) -> tuple[dict, dict]:
    """Dice (per label) and agreement this node's quantization costs relative to ``base``; positive = it hurts.

    ``base`` is the all-INT8 model (``float-one``) or the model with every Conv/MatMul/Gemm float
    (``quantize-one``: other quantizable ops such as the attention gates' Mul stay INT8 in every variant)."""
    sign = 1 if mode == "float-one" else -1
    return ({lab: sign * (variant["delta"][lab] - base["delta"][lab]) for lab in base["delta"]},
            {lab: sign * (variant["agreement"][lab] - base["agreement"][lab]) for lab in base["agreement"]})


def rank_nodes(fp32_onnx: Path, source_model, calibration: dict, float_names: list[str], scorer, mode: str,
               threads: int | None, work: Path, headline: str) -> tuple[dict, list[dict]]:
    """``(all-INT8 score, nodes most sensitive first)``: one ORT QDQ variant per quantized node, calibrated once;
    ``float_names`` (the fragile-ops preset) stay float in every variant."""
    from edgeseg.targets import load_profile
    from edgeseg.targets.onnxruntime_backend import OrtPredictor, qdq_quantize

    if mode not in MODES:
        raise EdgesegError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    options = load_profile("x86-onnxruntime-int8").options
    size = scorer.spec.preprocessing.size

    def variant(excluded: list[str]) -> dict:
        out = work / "variant.onnx"
        qdq_quantize(fp32_onnx, out, calibration, excluded, symmetric=False,
                     activation_type=options.get("activation_type", "uint8"),
                     weight_type=options.get("weight_type", "int8"),
                     method=options.get("calibration_method", "minmax"), rewrite_conv_transpose=True,
                     fixed_size=tuple(size), calibration_cache=work / "sensitivity.calibration.json")
        return scorer.score(OrtPredictor(out, "int8", "cpu", threads))

    import onnx

    all_int8 = variant(float_names)
    nodes = quantized_nodes(onnx.load(str(work / "variant.onnx")), source_model)
    base = all_int8 if mode == "float-one" else variant(float_names + [n["name"] for n in nodes])
    rows = []
    for node in track(nodes, f"sensitivity ({mode})"):
        t0 = time.perf_counter()
        others = [n["name"] for n in nodes if n is not node]
        s = variant(float_names + ([node["name"]] if mode == "float-one" else others))
        dice_cost, agreement_cost = _costs(mode, base, s)
        rows.append({**node, "dice_cost": dice_cost, "agreement_cost": agreement_cost,
                     "worst_label_cost": max(dice_cost.values()), "vanished": len(s["vanished"]),
                     "seconds": round(time.perf_counter() - t0, 2)})
    rows.sort(key=lambda r: (r["worst_label_cost"], r["agreement_cost"][headline]), reverse=True)
    return all_int8, rows


def measure_sensitivity(cfg: SensitivityConfig) -> dict:
    """Rank every quantized node by the Dice its INT8 execution costs; returns the JSON-ready result."""
    import onnx
    import torch

    from edgeseg.benchmark.fingerprint import device_fingerprint
    from edgeseg.inference import torch_predictor
    from edgeseg.onnx_export import export_onnx
    from edgeseg.targets.float_nodes import plan_float_nodes

    if cfg.mode not in MODES:
        raise EdgesegError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    start = time.perf_counter()
    model, spec = load_checkpoint(cfg.checkpoint)
    dataset = NnUNetDataset(cfg.data)
    check_compatible(spec, dataset)
    calib = load_or_build_calibration(cfg.calib, spec, cfg.calib_size, cfg.seed)
    tune_ids = tuning_cases(spec, dataset, calib, cfg.split, cfg.cases, cfg.seed)
    check_disjoint(calib, dataset, tune_ids, "tuning")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    scorer = TuningScorer(torch_predictor(model), spec, dataset, tune_ids)
    headline = headline_label(spec.label_names)
    with work_dir("edgeseg-sens") as tmp:
        work = Path(tmp)
        fp32 = export_onnx(model, work / "fp32.onnx", (2, spec.in_channels, *spec.preprocessing.size))
        source = onnx.load(str(fp32))
        float_plan = plan_float_nodes(source, cfg.preset)
        log.info("sensitivity: calibrating once, then one variant per quantized node on %d %s %s cases (%s)",
                 len(tune_ids), dataset.name, cfg.split, cfg.mode)
        all_int8, rows = rank_nodes(fp32, source, calib.inputs, [n["name"] for n in float_plan], scorer, cfg.mode,
                                    cfg.threads, work, headline)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"name": Path(cfg.checkpoint).name, "sha256": file_sha256(cfg.checkpoint)},
            "mode": cfg.mode, "measured_on": "ONNX Runtime CPU, QDQ with the x86-onnxruntime-int8 settings",
            "labels": spec.label_names, "headline_label": headline,
            "tuning": {"dataset": dataset.name, "split": cfg.split, "cases": tune_ids},
            "calibration": {"dataset": calib.manifest.get("dataset"), "cases": calib.case_ids,
                            "size": calib.manifest.get("size")},
            "preset": cfg.preset, "float_nodes": float_plan,
            "all_int8": {"delta": all_int8["delta"], "agreement": all_int8["agreement"],
                         "vanished": all_int8["vanished"]},
            "nodes": rows, "device": device_fingerprint(cfg.threads),
            "seconds": round(time.perf_counter() - start, 1)}
