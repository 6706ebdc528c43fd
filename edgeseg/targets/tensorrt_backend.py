"""TensorRT target: explicit-quantization QDQ ONNX (TensorRT's INT8 path) + an engine built on the device.

Engines are specific to the GPU and the TensorRT version, so the bundle always carries the ONNX and the exact
``trtexec`` command; ``edgeseg build-engine BUNDLE`` builds the engine where TensorRT and a GPU are present
(an RTX workstation, or the Jetson at deploy time). Everything that imports ``tensorrt`` is in this file.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from ..errors import EdgesegError
from .base import Artifact, BuildRequest, module_missing
from .profiles import TargetProfile

# TensorRT fuses Q/DQ into the weighted layers; quantizing their inputs (and nothing else) is its recommended recipe
QDQ_OP_TYPES = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def input_shapes(profile: TargetProfile, channels: int, model_size: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """min/opt/max shapes of the ``image`` input: batch range × (smallest, first, largest) spatial size."""
    sizes = profile.spatial_sizes(model_size)
    by_area = sorted(sizes, key=lambda s: int(np.prod(s)))
    lo, hi = profile.batch[0], profile.batch[2]
    return {"min": (lo, channels, *by_area[0]), "opt": (profile.batch[1], channels, *sizes[0]),
            "max": (hi, channels, *by_area[-1])}


def trtexec_command(onnx_name: str, engine_name: str, shapes: dict, precision: str, fp32_layers: list[str],
                    workspace_mib: int = 1024) -> str:
    """The ``trtexec`` line that builds the same engine as :func:`build_engine`."""
    dims = {k: "x".join(map(str, v)) for k, v in shapes.items()}
    args = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}", f"--minShapes=image:{dims['min']}",
            f"--optShapes=image:{dims['opt']}", f"--maxShapes=image:{dims['max']}",
            f"--memPoolSize=workspace:{workspace_mib}M"]
    if precision in ("int8", "fp16"):
        args += ["--fp16"] + (["--int8"] if precision == "int8" else [])
    if fp32_layers and precision == "fp16":
        args += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers)]
    return shlex.join(args)


def engine_key() -> str:
    """``<gpu>-sm<cc>-trt<version>``: an engine only runs where this key matches (one key for bundles and the
    device's engine cache: :func:`~edgeseg.targets.trt_engine_cache.device_key`)."""
    from .trt_engine_cache import device_key

    return device_key()


def build_engine(onnx_path: Path, engine_path: Path, shapes: dict, precision: str, fp32_layers: list[str],
                 workspace_mib: int = 1024) -> None:
    """Build and serialize an engine with the TensorRT 10 Python API (explicit batch, one optimization profile)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgesegError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("int8", "fp16"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if precision == "fp16" and fp32_layers:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if any(layer.name.startswith(n) for n in fp32_layers):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape("image", shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgesegError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    from ..data.io import atomic_write

    atomic_write(Path(engine_path), lambda tmp: tmp.write_bytes(bytes(serialized)))


class TrtRunner:
    """A deserialized engine. Device buffers come from torch when it is installed (workstations), else from
    cuda-python (the torch-free Jetson image); the cuda-python path is untested here (no GPU)."""

    def __init__(self, engine: Path | bytes, precision: str, name: str | None = None):
        """``engine``: the verified bytes of a bundle's engine, or a path in this device's engine cache."""
        import tensorrt as trt

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine if isinstance(engine, bytes) else Path(engine).read_bytes())
        if self.engine is None:
            raise EdgesegError(f"{name or engine}: TensorRT cannot load this engine (built for another device/version?)")
        self.context = self.engine.create_execution_context()
        self.torch = None if module_missing("torch") else __import__("torch")
        if self.torch is not None:
            self.stream = self.torch.cuda.Stream()
        else:
            from cuda.bindings import runtime as cudart

            self.cudart = cudart
            self.stream = _cuda(cudart.cudaStreamCreate())
        self.executed_precision = f"{precision} (TensorRT {trt.__version__})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        self.context.set_input_shape("image", tuple(x.shape))
        shape = tuple(self.context.get_tensor_shape("logits"))
        if self.torch is not None:
            torch = self.torch
            xin = torch.from_numpy(x).cuda()
            out = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address("image", xin.data_ptr())
            self.context.set_tensor_address("logits", out.data_ptr())
            self.context.execute_async_v3(self.stream.cuda_stream)
            self.stream.synchronize()
            return out.cpu().numpy()
        cudart, out = self.cudart, np.empty(shape, np.float32)
        d_in, d_out = _cuda(cudart.cudaMalloc(x.nbytes)), _cuda(cudart.cudaMalloc(out.nbytes))
        try:
            kind = cudart.cudaMemcpyKind
            _cuda(cudart.cudaMemcpy(d_in, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice))
            self.context.set_tensor_address("image", int(d_in))
            self.context.set_tensor_address("logits", int(d_out))
            self.context.execute_async_v3(int(self.stream))
            _cuda(cudart.cudaStreamSynchronize(self.stream))
            _cuda(cudart.cudaMemcpy(out.ctypes.data, d_out, out.nbytes, kind.cudaMemcpyDeviceToHost))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return out


def _cuda(result):
    """Unwrap a cuda-python ``(error, value…)`` tuple, raising on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EdgesegError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values or None


def gpu_missing() -> str | None:
    """Why TensorRT engines cannot run here (None when they can): TensorRT plus a CUDA GPU reachable through
    torch or cuda-python."""
    reason = module_missing("tensorrt")
    if reason:
        return reason
    if not module_missing("torch"):
        import torch

        return None if torch.cuda.is_available() else "no CUDA GPU visible"
    if module_missing("cuda"):
        return "needs torch or cuda-python (pip install cuda-python) for GPU buffers"
    from cuda.bindings import runtime as cudart

    err, count = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else "no CUDA GPU visible"


class TensorRtTarget:
    name = "tensorrt"
    default_profiles = {"int8": "rtx-tensorrt-int8", "fp16": "rtx-tensorrt-fp16"}

    def missing(self, build: bool = False) -> str | None:
        # building the QDQ ONNX needs only onnxruntime; running needs TensorRT and a GPU
        return module_missing("onnxruntime", "onnx") if build else gpu_missing()

    def build(self, request: BuildRequest) -> Artifact:
        import onnx

        from .onnxruntime_backend import qdq_quantize, write_metadata

        profile, opts = request.profile, {**request.profile.options, **request.options}
        if profile.precision == "fp32":
            raise EdgesegError(f"profile {profile.name}: TensorRT artifacts are int8 or fp16")
        onnx_name = f"{profile.name}.onnx"
        out = request.out_dir / onnx_name
        names = [n["name"] for n in request.float_nodes]
        if profile.precision == "int8":  # TensorRT needs symmetric INT8 activations (zero point 0)
            details = qdq_quantize(request.fp32_onnx, out, request.calibration, names, symmetric=True,
                                   activation_type="int8", weight_type="int8",
                                   method=opts.get("calibration_method", "minmax"),
                                   op_types=opts.get("op_types_to_quantize", QDQ_OP_TYPES),
                                   calibration_cache=opts.get("calibration_cache"))
        else:
            details = {"note": "FP32 ONNX; TensorRT builds FP16 with the float nodes pinned to FP32"}
            out.write_bytes(request.fp32_onnx.read_bytes())
        model = onnx.load(str(out))
        write_metadata(model, {**request.metadata, "edgeseg.precision": profile.precision})
        onnx.save(model, str(out))
        channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        shapes = input_shapes(profile, channels, request.model_size)
        workspace = int(opts.get("workspace_mib", 1024))
        engine_name = f"{profile.name}.<gpu-key>.engine"
        command = trtexec_command(onnx_name, engine_name, shapes, profile.precision, names, workspace)
        details.update({"shapes": {k: list(v) for k, v in shapes.items()}, "workspace_mib": workspace,
                        "trtexec": command, "engines": {}})
        files = {"model": onnx_name}
        reason = gpu_missing()
        if reason is None:
            key = engine_key()
            engine = f"{profile.name}.{key}.engine"
            build_engine(out, request.out_dir / engine, shapes, profile.precision, names, workspace)
            files[f"engine:{key}"] = engine
        else:
            details["engine_note"] = (f"no engine built here ({reason}); on the target GPU run "
                                      f"`edgeseg build-engine BUNDLE` or the trtexec command")
        return Artifact(name=profile.name, runtime=self.name, precision=profile.precision, files=files,
                        profile=profile.name, device=profile.device, float_nodes=names, details=details)

    def load(self, bundle_dir: Path, artifact: dict, threads: int | None = None) -> TrtRunner:
        reason = gpu_missing()
        if reason:
            raise EdgesegError(f"{artifact['name']}: TensorRT cannot run here ({reason})")
        if artifact.get("engine_path"):  # built on this device into an engine cache (edgeseg infer --engine-cache)
            return TrtRunner(Path(artifact["engine_path"]), artifact["precision"])
        from ..bundle import artifact_bytes

        role = f"engine:{engine_key()}"
        if role not in artifact["files"]:
            raise EdgesegError(f"{artifact['name']}: no engine for {role[7:]} in the bundle; run `edgeseg build-engine {bundle_dir}`")
        return TrtRunner(artifact_bytes(bundle_dir, artifact, role), artifact["precision"], artifact["files"][role])


def tensorrt_artifacts(manifest: dict, bundle_dir: Path, only: str | None = None) -> list[dict]:
    """The bundle's TensorRT artifacts (or the one named ``only``); an error when there is none."""
    chosen = [a for a in manifest["artifacts"] if a["runtime"] == "tensorrt" and only in (None, a["name"])]
    if not chosen:
        raise EdgesegError(f"{bundle_dir}: no TensorRT artifact{f' named {only!r}' if only else ''}")
    return chosen


def build_bundle_engines(bundle_dir: str | Path, only: str | None = None) -> list[tuple[str, Path]]:
    """Build an engine for this GPU for every TensorRT artifact of a verified bundle; registers each in the manifest."""
    from ..bundle import add_artifact_file, load_bundle
    from .trt_engine_cache import verified_copy

    reason = gpu_missing()
    if reason:
        raise EdgesegError(f"cannot build TensorRT engines here: {reason}")
    bundle_dir = Path(bundle_dir)
    manifest = load_bundle(bundle_dir)
    chosen = tensorrt_artifacts(manifest, bundle_dir, only)
    built, key = [], engine_key()
    for artifact in chosen:
        details = artifact["details"]
        engine = f"{artifact['name']}.{key}.engine"
        shapes = {k: tuple(v) for k, v in details["shapes"].items()}
        with verified_copy(bundle_dir, artifact) as onnx_path:
            build_engine(onnx_path, bundle_dir / engine, shapes, artifact["precision"], artifact["float_nodes"],
                         details.get("workspace_mib", 1024))
        add_artifact_file(bundle_dir, artifact["name"], f"engine:{key}", engine)
        built.append((artifact["name"], bundle_dir / engine))
    return built
