"""OpenVINO target: NNCF post-training INT8 on the OpenVINO model → IR (``.xml`` + ``.bin``)."""
from __future__ import annotations

import collections
import platform
import re
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.targets.base import Artifact, BuildRequest, Target, module_missing, require_tensors
from edgeseg.targets.registry import register_target

# ONNX op type → the OpenVINO op it becomes when the ONNX name is not kept (e.g. LayerNorm → MVN + Multiply + Add)
_OV_TYPE = {"LayerNormalization": "MVN", "InstanceNormalization": "MVN", "ConvTranspose": "ConvolutionBackpropData",
            "Softmax": "Softmax", "Erf": "Erf", "Resize": "Interpolate"}
_HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def ignored_names(ov_model, float_nodes: list[dict]) -> tuple[list[str], list[str]]:
    """OpenVINO op names for the ONNX ``float_nodes`` (of a model from ``read_model(onnx)``).

    One-to-one ops keep the ONNX name; a conv with bias becomes ``<name>/WithoutBiases`` + an Add ``<name>``;
    the op producing the graph output is renamed after the output tensor; decomposed ops (LayerNorm → MVN,
    ConvTranspose → ConvolutionBackpropData) get generated names and are matched by their position among ops
    of that type. Returns (names, unmapped ONNX names)."""
    ops = ov_model.get_ordered_ops()
    by_name = {op.get_friendly_name() for op in ops}
    by_type = collections.defaultdict(list)
    for op in ops:
        by_type[op.get_type_name()].append(op.get_friendly_name())
    output_chain = []  # the Result's producer and, through a bias Add, the layer itself
    node = ov_model.get_results()[0].input_value(0).get_node()
    while node is not None and len(output_chain) < 2:
        output_chain.append(node.get_friendly_name())
        node = node.input_value(0).get_node() if node.get_type_name() == "Add" else None
    names, unmapped = [], []
    for node in float_nodes:
        found = [n for n in (node["name"], node["name"] + "/WithoutBiases") if n in by_name]
        if node.get("reason", "").endswith("@logits"):
            found += output_chain
        # the ONNX name may survive only on a piece (e.g. the bias Add of a ConvTranspose): add the main op
        ov_type, index = _OV_TYPE.get(node["op_type"]), node.get("type_index")
        if ov_type and index is not None and node.get("type_count") == len(by_type[ov_type]):
            found.append(by_type[ov_type][index])
        names += found
        if not found:
            unmapped.append(node["name"])
    return sorted(set(names)), unmapped


def executed_precisions(compiled) -> dict[str, int]:
    """Counts of the precisions OpenVINO really ran its Convolution/MatMul nodes in (from the execution graph)."""
    counts: collections.Counter = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if layer_type in ("Convolution", "MatMul", "FullyConnected", "Deconvolution", "GroupConvolution"):
            counts[info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"] += 1
    return dict(counts)


def summarize_precisions(counts: dict[str, int]) -> str:
    return ", ".join(f"{p}×{n}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "unknown"


# an OpenVINO IR ``.xml``: an optional XML declaration, then the <net> root (OpenVINO would also read ONNX and
# other formats from the same bytes, resolving their external data against the working directory)
_IR_START = re.compile(rb"^(\xef\xbb\xbf)?\s*(<\?xml[^>]*\?>\s*)?<net[\s>]")


def read_ir(core, model: bytes, weights: bytes, name: str):
    """The ``openvino.Model`` of a bundle's verified IR bytes; bytes of any other format are refused."""
    if not _IR_START.match(bytes(model[:4096])):
        raise VerificationError(f"{name}: not an OpenVINO IR (.xml with a <net> root); refused")
    return core.read_model(model=model, weights=weights)


class OvPredictor:
    """A compiled OpenVINO model; records the precision its execution graph really uses."""

    def __init__(self, xml, device: str = "CPU", threads: int | None = None, hint: str | None = None,
                 name: str | None = None, profiling: bool = False, input_dtype=np.float32,
                 settings: dict | None = None):
        """``xml``: an IR/ONNX path, an ``openvino.Model`` already in memory, or ``(xml bytes, weights bytes)``
        (the verified files of a bundle). ``settings``: CPU plugin properties recorded by the target profile
        (e.g. ``ENABLE_CPU_PINNING``), over the latency defaults."""
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if hint:
            config["INFERENCE_PRECISION_HINT"] = _HINTS.get(hint, hint)
        if profiling:
            config["PERF_COUNT"] = True
        config.update(settings or {})
        core = ov.Core()
        try:
            if isinstance(xml, tuple):
                model = read_ir(core, xml[0], xml[1], name or "model")
            else:
                model = str(xml) if isinstance(xml, (str, Path)) else xml
            self.compiled = core.compile_model(model, device.upper(), config)
        except EdgesegError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types for an invalid model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EdgesegError(f"{name or xml}: OpenVINO cannot load it ({type(exc).__name__}: {first})") from None
        self.request, self.input_dtype = self.compiled.create_infer_request(), input_dtype
        self.precisions = executed_precisions(self.compiled)
        self.executed_precision = summarize_precisions(self.precisions)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=self.input_dtype)})
        return np.asarray(result[self.compiled.output(0)])


def _settings(artifact: Artifact) -> dict:
    """The CPU plugin properties the profile recorded at build (only those a profile may set)."""
    recorded = artifact.details.get("runtime_settings") or {}
    return {key: bool(value) for key, value in recorded.items() if key in ("ENABLE_CPU_PINNING",)}


@register_target
class OpenVinoTarget(Target):
    name = "openvino"
    short_name = "ov"
    aliases = ("ov",)
    default_profiles = {"int8": "x86-avx512-openvino-int8", "fp32": "x86-openvino-fp32"}
    default = True
    options = {"preset": str, "fast_bias_correction": bool, "model_type": str, "inference_precision_hint": str,
               "end_to_end": bool, "cpu_pinning": bool}
    tool_dists = ("openvino", "nncf")
    model_suffix = ".xml"

    @property
    def infer_preference(self) -> int:
        """Before ONNX Runtime on x86 CPUs, after it elsewhere."""
        return 10 if platform.machine().lower() in ("x86_64", "amd64") else 30

    def missing(self, build: bool = False) -> str | None:
        return module_missing("openvino", *(["nncf"] if build else []))

    def build(self, request: BuildRequest) -> Artifact:
        import openvino as ov

        profile, opts = request.profile, request.merged_options()
        if profile.precision == "fp16" and profile.device == "cpu":
            raise EdgesegError(f"profile {profile.name}: OpenVINO FP16 is for GPU/NPU devices; use int8 or fp32 on CPU")
        model = ov.Core().read_model(str(request.fp32_onnx))
        details: dict = {}
        if (size := request.fixed_size()) is not None:  # static spatial size: shape subgraphs fold away
            shape = list(model.input(0).get_partial_shape())
            model.reshape({model.input(0): ov.PartialShape([shape[0], shape[1], *size])})
            details["fixed_spatial_size"] = list(size)
        names: list[str] = []
        if profile.precision == "int8":
            model, details = self._quantize(model, request, opts)
            names = details["ignored_scope"]
        for key, value in {**request.metadata, "edgeseg.precision": profile.precision}.items():
            model.set_rt_info(value, ["edgeseg", key])
        xml = request.out_dir / f"{profile.name}.xml"
        # FP16 weight compression is OpenVINO's default; keep FP32 weights unless FP16 was asked for
        ov.save_model(model, str(xml), compress_to_fp16=profile.precision == "fp16")
        details["inference_precision_hint"] = opts.get("inference_precision_hint")
        if "cpu_pinning" in opts:  # else OpenVINO's own default (pinned on Linux)
            details["runtime_settings"] = {"ENABLE_CPU_PINNING": bool(opts["cpu_pinning"])}
        files = {"model": xml.name, "weights": xml.with_suffix(".bin").name}
        if opts.get("end_to_end", True):
            files.update(self._end_to_end(xml, request, profile.precision, details))
        return Artifact(name=profile.name, runtime=self.name, precision=profile.precision, files=files,
                        profile=profile.name, device=profile.device, float_nodes=names, details=details)

    @staticmethod
    def _end_to_end(xml: Path, request: BuildRequest, precision: str, details: dict) -> dict[str, str]:
        """The end-to-end graph (:mod:`edgeseg.targets.pre_post`) beside the model, when its preprocessing allows."""
        import openvino as ov

        from edgeseg.targets.pre_post import end_to_end_details, end_to_end_request, wrap_openvino

        spec, classes, why = end_to_end_request(request.metadata)
        if spec is not None and _HINTS.get(details.get("inference_precision_hint") or "") != "f32":
            # the histogram statistics and the logits' resize need f32; OpenVINO's default is BF16 on AMX CPUs
            spec, why = None, "the profile's float parts are not f32 (inference_precision_hint)"
        details.update(end_to_end_details(why))
        if spec is None:
            return {}
        model = wrap_openvino(ov.Core().read_model(str(xml)), spec, classes)
        for key, value in {**request.metadata, "edgeseg.precision": precision}.items():
            model.set_rt_info(value, ["edgeseg", key])
        e2e = xml.with_name(f"{xml.stem}.e2e.xml")
        ov.save_model(model, str(e2e), compress_to_fp16=precision == "fp16")
        return {"end_to_end": e2e.name, "end_to_end_weights": e2e.with_suffix(".bin").name}

    @staticmethod
    def _quantize(model, request: BuildRequest, opts: dict):
        import logging

        import nncf

        nncf.set_log_level(logging.WARNING)

        samples = [arr[i : i + 1] for arr in request.calibration.values() for i in range(len(arr))]
        names, unmapped = ignored_names(model, request.float_nodes)
        preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
        kwargs = {"preset": preset[opts.get("preset", "performance")], "subset_size": len(samples),
                  "fast_bias_correction": opts.get("fast_bias_correction", False),
                  "ignored_scope": nncf.IgnoredScope(names=names, validate=False)}
        if opts.get("model_type") == "transformer":
            kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        control = opts.get("accuracy_control")  # edgeseg.tuning.accuracy_control.NncfAccuracyControl
        if control is not None:
            quantized = control.quantize(model, nncf.Dataset(samples), kwargs)
        else:
            quantized = nncf.quantize(model, nncf.Dataset(samples), **kwargs)
        ops = collections.Counter(op.get_type_name() for op in quantized.get_ordered_ops())
        how = control.describe() if control is not None else "quantize"
        return quantized, {"quantizer": f"nncf {nncf.__version__} {how} (OpenVINO backend)",
                           "preset": opts.get("preset", "performance"), "model_type": opts.get("model_type", "default"),
                           "fast_bias_correction": kwargs["fast_bias_correction"], "calibration_samples": len(samples),
                           "ignored_scope": names, "float_nodes_not_mapped": unmapped,
                           "fake_quantize_ops": ops.get("FakeQuantize", 0)}

    def load(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> OvPredictor:
        return self._load(bundle_dir, artifact, threads, "model", "weights")

    def load_end_to_end(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> OvPredictor | None:
        if "end_to_end" not in artifact.files:
            return None
        return self._load(bundle_dir, artifact, threads, "end_to_end", "end_to_end_weights", np.uint8)

    @staticmethod
    def _load(bundle_dir: Path, artifact: Artifact, threads: int | None, model: str, weights: str,
              input_dtype=np.float32) -> OvPredictor:
        from edgeseg.bundle.members import artifact_bytes

        files = (artifact_bytes(bundle_dir, artifact, model), artifact_bytes(bundle_dir, artifact, weights))
        return OvPredictor(files, artifact.device, threads, artifact.details.get("inference_precision_hint"),
                           name=artifact.files[model], input_dtype=input_dtype, settings=_settings(artifact))

    def load_probe(self, bundle_dir: Path, artifact: Artifact, tensors: list[str], threads: int | None = None):
        import openvino as ov

        from edgeseg.bundle.members import artifact_bytes

        model = read_ir(ov.Core(), artifact_bytes(bundle_dir, artifact, "model"),
                        artifact_bytes(bundle_dir, artifact, "weights"), artifact.files["model"])
        by_name = {name: out for op in model.get_ordered_ops() for out in op.outputs() for name in out.get_names()}
        require_tensors(artifact, tensors, by_name)
        model.add_outputs([by_name[t] for t in tensors])
        predictor = OvPredictor(model, artifact.device, threads, artifact.details.get("inference_precision_hint"),
                                name=artifact.files["model"], settings=_settings(artifact))

        def probe(batch: np.ndarray) -> dict[str, np.ndarray]:
            result = predictor.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
            return {t: np.asarray(result[predictor.compiled.output(t)]) for t in tensors}

        return probe

    def layer_profile(self, bundle_dir: Path, artifact: Artifact, sample: np.ndarray, threads: int | None,
                      runs: int) -> list[dict]:
        """OpenVINO's performance counters per executed node (``exec``: the kernel it chose, e.g.
        ``brgconv_avx512_amx_I8``), median over the runs."""
        from edgeseg.bundle.members import artifact_bytes

        files = (artifact_bytes(bundle_dir, artifact, "model"), artifact_bytes(bundle_dir, artifact, "weights"))
        predictor = OvPredictor(files, artifact.device, threads, artifact.details.get("inference_precision_hint"),
                                name=artifact.files["model"], profiling=True, settings=_settings(artifact))
        times: dict[tuple, list[float]] = collections.defaultdict(list)
        for i in range(runs + 3):
            predictor(sample)
            if i >= 3:  # after a warm-up; OpenVINO reports the last inference
                for info in predictor.request.get_profiling_info():
                    if str(info.status).endswith("EXECUTED") and "NOT_RUN" not in str(info.status):
                        times[(info.node_name, info.node_type, info.exec_type)].append(
                            info.real_time.total_seconds() * 1e3)
        return [{"layer": k[0], "op": k[1], "exec": k[2], "ms": float(np.median(v))} for k, v in times.items()]

    def workload_runner(self, path: Path, threads: int | None, rank: int) -> OvPredictor:
        import openvino as ov

        model = ov.convert_model(str(path), input=[("input", ov.PartialShape([-1] * rank))])  # OpenVINO needs the rank
        return OvPredictor(model, threads=threads, hint="f32")
