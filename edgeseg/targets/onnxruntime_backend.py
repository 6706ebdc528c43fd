"""ONNX Runtime target: static QDQ INT8 (per-channel weights), FP16 for GPUs, FP32 reference."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.housekeeping import work_dir
from edgeseg.targets.base import Artifact, BuildRequest, Target, module_missing, require_tensors
from edgeseg.targets.registry import register_target

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def write_metadata(model, metadata: dict[str, str]) -> None:
    """Replace ``metadata_props`` of an ``onnx.ModelProto`` with ``metadata`` (so a copied file explains itself)."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*keep, *metadata.items()]:
        model.metadata_props.add(key=key, value=value)


class _Reader:
    """Feeds calibration arrays (every spatial size of the profile) to ONNX Runtime's calibrator."""

    def __init__(self, calibration: dict[tuple[int, ...], np.ndarray], input_name: str = "image"):
        self._items = iter([{input_name: arr[i : i + 1]} for arr in calibration.values() for i in range(len(arr))])

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # some ORT versions call this; calibration runs once per reader here
        pass


def qdq_quantize(fp32_onnx: Path, out: Path, calibration: dict, float_nodes: list[str], *, symmetric: bool,
                 activation_type: str = "uint8", weight_type: str = "int8", method: str = "minmax",
                 op_types: list[str] | None = None, extra_options: dict | None = None,
                 rewrite_conv_transpose: bool = False, fixed_size: tuple[int, ...] | None = None,
                 calibration_cache: Path | None = None) -> dict:
    """Static QDQ quantization of ``fp32_onnx`` into ``out``; returns the settings and what was left float.

    Optional exact rewrites first (ConvTranspose → Conv + DepthToSpace; spatial size pinned), then the graph
    is pre-processed (BatchNorm folded, shapes inferred; symbolic shape inference is skipped because it fails
    on transformer graphs). ``float_nodes`` get no QDQ pair. ``calibration_cache``: tensor ranges are read
    from this JSON file when it exists (no calibration run), else computed and written to it — for building
    many variants of one model.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise EdgesegError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    from edgeseg.targets.onnx_rewrites import conv_transpose_to_depth_to_space, fix_spatial_size

    with work_dir("edgeseg-ort") as tmp:
        source, pre = Path(tmp) / "source.onnx", Path(tmp) / "pre.onnx"
        model = onnx.load(str(fp32_onnx))
        rewritten = conv_transpose_to_depth_to_space(model, keep=set(float_nodes)) if rewrite_conv_transpose else 0
        if fixed_size:
            fix_spatial_size(model, fixed_size)
        onnx.save(model, str(source))
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        present = {n.name for n in onnx.load(str(pre)).graph.node}
        excluded = [n for n in float_nodes if n in present]
        options = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, **(extra_options or {})}
        quantize_static(str(pre), str(out), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=types[activation_type], weight_type=types[weight_type], per_channel=True,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                          "percentile": CalibrationMethod.Percentile}[method],
                        nodes_to_exclude=excluded, op_types_to_quantize=op_types, extra_options=options,
                        calibration_cache_path=calibration_cache)
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
            "activation_type": activation_type, "weight_type": weight_type, "symmetric_activations": symmetric,
            "calibration_method": method, "calibration_samples": int(sum(len(a) for a in calibration.values())),
            "op_types_to_quantize": op_types or "all", "extra_options": options,
            "conv_transpose_rewritten": rewritten, "fixed_spatial_size": list(fixed_size) if fixed_size else None,
            "excluded_nodes": excluded, "float_nodes_not_in_graph": sorted(set(float_nodes) - present),
            "qdq_pairs": ops.get("QuantizeLinear", 0)}


def fp16_convert(fp32_onnx: Path, out: Path, float_nodes: list[str]) -> dict:
    """FP16 weights and compute with float nodes (LayerNorm, InstanceNorm, ...) kept FP32; I/O stays FP32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_onnx))
    blocked_ops = ["LayerNormalization", "InstanceNormalization", "Softmax"]
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked_ops, node_block_list=float_nodes)
    onnx.save(half, str(out))
    return {"converter": "onnxruntime.transformers.float16", "fp32_ops": blocked_ops, "fp32_nodes": float_nodes}


def session_options(threads: int | None, spinning: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # spinning worker threads steal the cores doing the work when cores are few or shared (measured: INT8
    # 1.8× FP32 with spinning, 2.7× without, one session on 2 cores)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise EdgesegError(f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); "
                           f"this onnxruntime has {', '.join(ort.get_available_providers())}")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtPredictor:
    """An ONNX model in an ONNX Runtime session: a file edgeseg built, or the verified bytes of a bundle file.
    ``providers``: the execution providers, in order (default: those of ``device``)."""

    def __init__(self, model: Path | bytes, precision: str, device: str = "cpu", threads: int | None = None,
                 name: str | None = None, providers: list[str] | None = None, profile_prefix: str | None = None,
                 input_dtype=np.float32, spinning: bool = False):
        import onnxruntime as ort

        options = session_options(threads, spinning)
        if profile_prefix:  # ONNX Runtime's profiler: a JSON trace of every node's kernel time
            options.enable_profiling, options.profile_file_prefix = True, profile_prefix
        providers = list(providers) if providers else providers_for(device)
        try:
            if isinstance(model, bytes):
                from edgeseg.bundle.onnx_scan import check_self_contained

                check_self_contained(model, name or "model")
                with work_dir("edgeseg-ort-noext") as empty:  # external data could only resolve into this empty folder
                    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(empty))
                    # read as the ONNX protobuf that was scanned, never as an ORT-format flatbuffer of the same bytes
                    options.add_session_config_entry("session.load_model_format", "ONNX")
                    self.session = ort.InferenceSession(model, options, providers=providers)
            else:
                self.session = ort.InferenceSession(str(model), options, providers=providers)
        except EdgesegError:
            raise
        except Exception as exc:  # ONNX Runtime raises its own types for an invalid or unsupported model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EdgesegError(f"{name or model}: ONNX Runtime cannot load it ({type(exc).__name__}: {first})") from None
        self.input_name, self.input_dtype = self.session.get_inputs()[0].name, input_dtype
        self.executed_precision = f"{precision} ({self.session.get_providers()[0]})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=self.input_dtype)})[0]


def _spinning(artifact: Artifact) -> bool:
    """The profile's ``intra_op_spinning`` as recorded at build (bundles from before: off)."""
    return bool((artifact.details.get("runtime_settings") or {}).get("intra_op_spinning", False))


def ort_layer_times(trace: list[dict], warmup: int) -> list[dict]:
    """Per-node kernel times (median over the runs after ``warmup``) from an ONNX Runtime profile trace."""
    import collections

    runs = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs[warmup] if len(runs) > warmup else 0
    times: dict[tuple, list[float]] = collections.defaultdict(list)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= start:
            args = event.get("args") or {}
            key = (event["name"].removesuffix("_kernel_time"), args.get("op_name", "?"), args.get("provider", "?"))
            times[key].append(event["dur"] / 1e3)
    return [{"layer": k[0], "op": k[1], "exec": k[2], "ms": float(np.median(v))} for k, v in times.items()]


@register_target
class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    short_name = "ort"
    aliases = ("onnx", "ort")
    default_profiles = {"int8": "x86-onnxruntime-int8", "fp16": "rtx-onnxruntime-fp16", "fp32": "x86-onnxruntime-fp32"}
    default = True
    infer_preference = 20
    options = {"calibration_method": str, "activation_type": str, "weight_type": str, "op_types_to_quantize": list,
               "extra_options": dict, "rewrite_conv_transpose": bool, "calibration_cache": str, "intra_op_spinning": bool,
               "end_to_end": bool}
    tool_dists = ("onnx", "onnxruntime", "onnxruntime-gpu")
    model_suffix = ".onnx"

    def missing(self, build: bool = False) -> str | None:
        return module_missing("onnxruntime", *(["onnx"] if build else []))

    def build(self, request: BuildRequest) -> Artifact:
        import onnx

        profile, opts = request.profile, request.merged_options()
        stem = f"{profile.name}.onnx"
        out = request.out_dir / stem
        names = [n["name"] for n in request.float_nodes]
        if profile.precision == "int8":
            details = qdq_quantize(request.fp32_onnx, out, request.calibration, names, symmetric=False,
                                   activation_type=opts.get("activation_type", "uint8"),
                                   weight_type=opts.get("weight_type", "int8"),
                                   method=opts.get("calibration_method", "minmax"),
                                   op_types=opts.get("op_types_to_quantize"), extra_options=opts.get("extra_options"),
                                   rewrite_conv_transpose=opts.get("rewrite_conv_transpose", True),
                                   fixed_size=request.fixed_size(), calibration_cache=opts.get("calibration_cache"))
        elif profile.precision == "fp16":
            details = fp16_convert(request.fp32_onnx, out, names)
        else:
            out.write_bytes(request.fp32_onnx.read_bytes())
            details, names = {}, []
        model = onnx.load(str(out))
        write_metadata(model, {**request.metadata, "edgeseg.precision": profile.precision})
        onnx.save(model, str(out))
        files = {"model": stem}
        details["runtime_settings"] = {"intra_op_spinning": bool(opts.get("intra_op_spinning", False))}
        if opts.get("end_to_end", True):
            files.update(self._end_to_end(model, request, profile.name, details))
        return Artifact(name=profile.name, runtime=self.name, precision=profile.precision, files=files,
                        profile=profile.name, device=profile.device, float_nodes=names if profile.precision != "fp32" else [], details=details)

    @staticmethod
    def _end_to_end(model, request: BuildRequest, stem: str, details: dict) -> dict[str, str]:
        """The end-to-end graph (:mod:`edgeseg.targets.pre_post`) beside the model, when its preprocessing allows."""
        import onnx

        from edgeseg.targets.pre_post import end_to_end_details, end_to_end_request, wrap_onnx

        spec, classes, why = end_to_end_request(request.metadata)
        details.update(end_to_end_details(why))
        if spec is None:
            return {}
        onnx.save(wrap_onnx(model, spec, classes), str(request.out_dir / f"{stem}.e2e.onnx"))
        return {"end_to_end": f"{stem}.e2e.onnx"}

    def load(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> OrtPredictor:
        from edgeseg.bundle.members import artifact_bytes

        return OrtPredictor(artifact_bytes(bundle_dir, artifact, "model"), artifact.precision, artifact.device, threads,
                            name=artifact.files["model"], spinning=_spinning(artifact))

    def load_end_to_end(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> OrtPredictor | None:
        from edgeseg.bundle.members import artifact_bytes

        if "end_to_end" not in artifact.files:
            return None
        return OrtPredictor(artifact_bytes(bundle_dir, artifact, "end_to_end"), artifact.precision, artifact.device,
                            threads, name=artifact.files["end_to_end"], input_dtype=np.uint8, spinning=_spinning(artifact))

    def load_probe(self, bundle_dir: Path, artifact: Artifact, tensors: list[str], threads: int | None = None):
        import onnx

        from edgeseg.bundle.members import artifact_bytes

        model = onnx.load_model_from_string(artifact_bytes(bundle_dir, artifact, "model"))
        produced = {name for node in model.graph.node for name in node.output}
        require_tensors(artifact, tensors, produced)
        model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
        predictor = OrtPredictor(model.SerializeToString(), artifact.precision, artifact.device, threads,
                                 name=artifact.files["model"], spinning=_spinning(artifact))

        def probe(batch: np.ndarray) -> dict[str, np.ndarray]:
            feed = {predictor.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
            return dict(zip(tensors, predictor.session.run(tensors, feed)))

        return probe

    def layer_profile(self, bundle_dir: Path, artifact: Artifact, sample: np.ndarray, threads: int | None,
                      runs: int) -> list[dict]:
        """ONNX Runtime's profiler: each node's kernel time (``exec``: its execution provider)."""
        import json

        from edgeseg.bundle.members import artifact_bytes

        with work_dir("edgeseg-ort-profile") as tmp:
            predictor = OrtPredictor(artifact_bytes(bundle_dir, artifact, "model"), artifact.precision, artifact.device,
                                     threads, name=artifact.files["model"], profile_prefix=str(Path(tmp) / "ort"))
            for _ in range(runs + 3):
                predictor(sample)
            trace = json.loads(Path(predictor.session.end_profiling()).read_text())
        return ort_layer_times(trace, warmup=3)

    def workload_runner(self, path: Path, threads: int | None, rank: int) -> OrtPredictor:
        return OrtPredictor(path, "fp32", "cpu", threads)
