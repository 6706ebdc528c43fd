"""The TensorRT target: explicit-quantization QDQ ONNX (TensorRT's INT8 path) + an engine built on the device.

Engines are specific to the GPU and the TensorRT version, so the bundle always carries the ONNX and the exact
``trtexec`` command; ``edgeseg build-engine BUNDLE`` (:func:`build_bundle_engines`) builds the engine where
TensorRT and a GPU are present (an RTX workstation, or the Jetson at deploy time).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.targets.base import Artifact, BuildRequest, Predictor, Target, module_missing
from edgeseg.targets.tensorrt.engine import build_engine, device_key, engine_shapes, input_shapes, trtexec_command
from edgeseg.targets.tensorrt.engine_cache import ensure_engine, verified_copy, workspace_mib
from edgeseg.targets.tensorrt.runtime import TrtPredictor, gpu_missing

# TensorRT fuses Q/DQ into the weighted layers; quantizing their inputs (and nothing else) is its recommended recipe
QDQ_OP_TYPES = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
ENGINE_ROLE = "engine:"
log = logging.getLogger(__name__)


class TensorRtTarget(Target):
    name = "tensorrt"
    short_name = "trt"
    aliases = ("trt",)
    default_profiles = {"int8": "rtx-tensorrt-int8", "fp16": "rtx-tensorrt-fp16"}
    default = True
    infer_preference = 0  # on an NVIDIA GPU with an engine for it, before everything else
    options = {"calibration_method": str, "op_types_to_quantize": list, "calibration_cache": str, "workspace_mib": int}
    tool_dists = ("tensorrt",)
    model_suffix = ".onnx"

    def missing(self, build: bool = False) -> str | None:
        # building the QDQ ONNX needs only onnxruntime; running needs TensorRT and a GPU
        return module_missing("onnxruntime", "onnx") if build else gpu_missing()

    def build(self, request: BuildRequest) -> Artifact:
        import onnx

        from edgeseg.targets.onnxruntime_backend import qdq_quantize, write_metadata

        profile, opts = request.profile, request.merged_options()
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
        command = trtexec_command(onnx_name, f"{profile.name}.<gpu-key>.engine", shapes, profile.precision, names,
                                  workspace)
        details.update({"shapes": {k: list(v) for k, v in shapes.items()}, "workspace_mib": workspace,
                        "trtexec": command, "engines": {}})
        files = {"model": onnx_name}
        reason = gpu_missing()
        if reason is None:
            key = device_key()
            engine = f"{profile.name}.{key}.engine"
            build_engine(out, request.out_dir / engine, shapes, profile.precision, names, workspace)
            files[ENGINE_ROLE + key] = engine
        else:
            details["engine_note"] = (f"no engine built here ({reason}); on the target GPU run "
                                      f"`edgeseg build-engine BUNDLE` or the trtexec command")
        return Artifact(name=profile.name, runtime=self.name, precision=profile.precision, files=files,
                        profile=profile.name, device=profile.device, float_nodes=names, details=details)

    def load(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> TrtPredictor:
        reason = gpu_missing()
        if reason:
            raise EdgesegError(f"{artifact.name}: TensorRT cannot run here ({reason})")
        role = ENGINE_ROLE + device_key()
        if role in artifact.prepared:  # built on this device into an engine cache (:meth:`prepare`)
            return TrtPredictor(Path(artifact.prepared[role]), artifact.precision)
        from edgeseg.bundle.members import artifact_bytes

        if role not in artifact.files:
            raise EdgesegError(f"{artifact.name}: no engine for {role[len(ENGINE_ROLE):]} in the bundle; "
                               f"run `edgeseg build-engine {bundle_dir}`")
        return TrtPredictor(artifact_bytes(bundle_dir, artifact, role), artifact.precision, artifact.files[role])

    def not_ready(self, artifact: Artifact, cache: bool = False) -> str | None:
        if cache or any(k.startswith(ENGINE_ROLE) for k in artifact.files):
            return None
        return "no engine in the bundle (pass --engine-cache DIR or run `edgeseg build-engine`)"

    def prepare(self, bundle_dir: Path, artifact: Artifact, cache: Path) -> Artifact:
        """The engine for this device, built in ``cache`` from the verified ONNX on first use, reused after."""
        engine, built = ensure_engine(Path(bundle_dir), artifact, cache)
        log.info("TensorRT engine %s: %s", "built" if built else "reused", engine)
        return replace(artifact, prepared={**artifact.prepared, ENGINE_ROLE + device_key(): engine})

    def stand_in(self, bundle_dir: Path, artifact: Artifact, threads: int | None, reason: str) -> tuple[Predictor, str]:
        """The QDQ ONNX on ONNX Runtime's CPU kernels: its accuracy, not its latency."""
        from edgeseg.bundle.members import artifact_bytes
        from edgeseg.targets.onnxruntime_backend import OrtPredictor

        predictor = OrtPredictor(artifact_bytes(bundle_dir, artifact, "model"), artifact.precision, "cpu", threads,
                                 name=artifact.files["model"])
        return predictor, (f"QDQ ONNX on ONNX Runtime CPU (TensorRT: {reason}); latency not representative, "
                           "not measured")


def tensorrt_artifacts(manifest: dict, bundle_dir: Path, only: str | None = None) -> list[Artifact]:
    """The bundle's TensorRT artifacts (or the one named ``only``); an error when there is none."""
    from edgeseg.bundle import manifest_artifacts

    chosen = [a for a in manifest_artifacts(manifest) if a.runtime == TensorRtTarget.name and only in (None, a.name)]
    if not chosen:
        raise EdgesegError(f"{bundle_dir}: no TensorRT artifact{f' named {only!r}' if only else ''}")
    return chosen


def build_bundle_engines(bundle_dir: str | Path, only: str | None = None) -> list[tuple[str, Path]]:
    """Build an engine for this GPU for every TensorRT artifact of a verified bundle; registers each in the manifest."""
    from edgeseg.bundle import add_artifact_file, load_bundle

    reason = gpu_missing()
    if reason:
        raise EdgesegError(f"cannot build TensorRT engines here: {reason}")
    bundle_dir = Path(bundle_dir)
    manifest = load_bundle(bundle_dir)
    built, key = [], device_key()
    for artifact in tensorrt_artifacts(manifest, bundle_dir, only):
        engine = f"{artifact.name}.{key}.engine"
        with verified_copy(bundle_dir, artifact) as onnx_path:
            build_engine(onnx_path, bundle_dir / engine, engine_shapes(artifact), artifact.precision,
                         artifact.float_nodes, workspace_mib(artifact))
        add_artifact_file(bundle_dir, artifact.name, ENGINE_ROLE + key, engine)
        built.append((artifact.name, bundle_dir / engine))
    return built
