"""What users would pick instead of edgeseg's artifacts, built from the bundle's own FP32 model so that the
comparison is like for like: ``torch.compile``, OpenVINO FP32 with an f32 hint and at its default precision,
ONNX Runtime ``quantize_static`` and NNCF ``quantize`` with their defaults, PyTorch on a CUDA GPU.

Each baseline is an :class:`~edgeseg.artifact.Artifact` with a ``root`` folder, so the same loaders,
accuracy pass and isolated latency workers measure it. Every tool is used exactly as its documentation's
first example does: no preprocessing, no ignored scope, no tuned options.
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.progress import silenced
from edgeseg.targets import get_target, load_profile
from edgeseg.targets.base import BuildRequest

INC_REASON = ("neural-compressor is not in edgeseg's environment: its PyTorch INT8 path needs torchao PT2E and a "
              "separate venv; measured there by benchmarks/suites/inc_check.py (see docs/neural_compressor.md)")


def _record(name: str, runtime: str, precision: str, files: dict, root: Path, description: str,
            details: dict | None = None, device: str = "cpu", profile: str = "") -> Artifact:
    return Artifact(name=f"baseline:{name}", runtime=runtime, precision=precision, files=files, profile=profile,
                    device=device, details=details or {}, recorded={"origin": "baseline", "description": description},
                    root=Path(root))


def _defaults(fn) -> dict:
    """The keyword defaults of ``fn`` as strings: what "with its defaults" meant for this installed version."""
    return {k: str(p.default) for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and p.default is not None}


def ort_quantize_static_defaults(fp32_onnx: Path, out: Path, calibration: dict) -> dict:
    """``quantize_static(model, out, reader)`` and nothing else."""
    from onnxruntime.quantization import quantize_static

    from edgeseg.targets.onnxruntime_backend import _Reader

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice: the point here is the defaults
    try:
        quantize_static(str(fp32_onnx), str(out), _Reader(calibration))
    finally:
        root.setLevel(level)
    return {"quantizer": "onnxruntime.quantization.quantize_static", "defaults": _defaults(quantize_static)}


def nncf_quantize_defaults(fp32_onnx: Path, out_xml: Path, calibration: dict) -> dict:
    """``nncf.quantize(ov_model, nncf.Dataset(samples))`` and ``ov.save_model`` with their defaults."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)
    samples = [arr[i : i + 1] for arr in calibration.values() for i in range(len(arr))]
    # the default subset_size (300) exceeds the calibration set, which NNCF warns about on every run; the
    # samples used are recorded below, and passing subset_size would change the defaults this baseline stands for
    with silenced("nncf", "Dataset contains only"):
        quantized = nncf.quantize(ov.Core().read_model(str(fp32_onnx)), nncf.Dataset(samples))
    ov.save_model(quantized, str(out_xml))
    return {"quantizer": f"nncf {nncf.__version__} quantize (OpenVINO backend)", "defaults": _defaults(nncf.quantize),
            "calibration_samples": len(samples), "save_model": "compress_to_fp16=True (default)"}


def build_baselines(bundle_dir: Path, artifacts: list[Artifact], reference: Artifact, fp32_onnx: Path | None,
                    calibration: dict | None, work: Path, cuda: bool, model_size: tuple[int, ...],
                    runtimes: set[str] = frozenset()) -> tuple[list[Artifact], list[Artifact]]:
    """Baseline artifacts built into ``work`` and those that could not be built (``status``/``notes`` recorded),
    for ``runtimes`` only when given. The bundle's own FP32 artifacts stand in
    where they already are a baseline."""
    profiles = {a.profile for a in artifacts}
    built, skipped = [], []

    def wanted(runtime: str) -> bool:
        return not runtimes or runtime in runtimes

    def attempt(name: str, runtime: str, precision: str, make) -> None:
        if not wanted(runtime):
            return
        reason = get_target(runtime).missing(build=True)
        if precision == "int8" and not calibration:
            reason = "no calibration data for the INT8 baselines (pass --data with training cases)"
        try:
            if not reason:
                built.append(make())
                return
        except Exception as exc:  # a default tool failing on this model is a result to report, not a crash
            reason = f"build failed: {str(exc).splitlines()[0][:200]}"
        skipped.append(_skipped(name, runtime, precision, reason))

    if reference.runtime == "torch" and wanted("torch"):
        ckpt = {"model": reference.files["model"]}
        built.append(_record("torch-compile", "torch", "fp32", ckpt, bundle_dir,
                             "FP32 model, torch.compile (inductor, default mode)", {"compile": True}))
        if cuda:
            built.append(_record("torch-cuda-fp32", "torch", "fp32", ckpt, bundle_dir, "FP32 PyTorch eager on the GPU",
                                 device="cuda"))
            built.append(_record("torch-cuda-fp16", "torch", "fp16", ckpt, bundle_dir,
                                 "FP16 PyTorch eager on the GPU (model.half())", device="cuda"))
    if fp32_onnx is None:
        return built, skipped + [_skipped("onnx-baselines", "onnxruntime", "fp32", "the bundle has no FP32 ONNX artifact")]
    for profile, short, text in (("x86-openvino-fp32", "openvino-f32", "FP32 IR, INFERENCE_PRECISION_HINT f32"),
                                 ("x86-openvino-default", "openvino-default",
                                  "FP32 IR at OpenVINO's default precision (BF16 on AVX-512 BF16/AMX CPUs)")):
        if profile not in profiles:
            attempt(short, "openvino", "fp32",
                    lambda p=profile, s=short, t=text: _openvino_fp32(p, s, t, fp32_onnx, work, model_size))

    def ort_default():
        details = ort_quantize_static_defaults(fp32_onnx, work / "ort_quantize_static_defaults.onnx", calibration)
        return _record("ort-quantize-static-defaults", "onnxruntime", "int8",
                       {"model": "ort_quantize_static_defaults.onnx"}, work,
                       "ONNX Runtime quantize_static with all defaults (QDQ, S8/S8 per-tensor, MinMax)", details)

    def nncf_default():
        details = nncf_quantize_defaults(fp32_onnx, work / "nncf_defaults.xml", calibration)
        return _record("nncf-defaults", "openvino", "int8", {"model": "nncf_defaults.xml", "weights": "nncf_defaults.bin"},
                       work, "NNCF quantize with all defaults, run at OpenVINO's default precision", details)

    attempt("ort-quantize-static-defaults", "onnxruntime", "int8", ort_default)
    attempt("nncf-defaults", "openvino", "int8", nncf_default)
    if wanted("torch"):  # listed for completeness, never asked for: not in edgeseg's environment by design
        skipped.append(_skipped("neural-compressor-int8", "torch", "int8", INC_REASON, optional=True))
    return built, skipped


def _openvino_fp32(profile_name: str, short: str, text: str, fp32_onnx: Path, work: Path,
                   model_size: tuple[int, ...]) -> Artifact:
    profile = load_profile(profile_name)
    request = BuildRequest(fp32_onnx=fp32_onnx, out_dir=work, profile=profile, calibration={},
                           model_size=model_size, float_nodes=[], metadata={},
                           options={"static_spatial": False})  # as users read it: no reshape
    artifact = get_target("openvino").build(request)
    return _record(short, "openvino", "fp32", artifact.files, work, text, artifact.details, profile=profile_name)


def _skipped(name: str, runtime: str, precision: str, reason: str, optional: bool = False) -> Artifact:
    skipped = _record(name, runtime, precision, {}, Path("."), "")
    skipped.recorded.update(status="not_measured", notes=[reason], optional=optional)
    return skipped
