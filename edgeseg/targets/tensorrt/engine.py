"""TensorRT engines from ONNX: the input shapes, the ``trtexec`` line, the build with the TensorRT Python API, and
the device key an engine is valid for. The lowest module of the package (it imports none of the others)."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError
from edgeseg.targets.profiles import TargetProfile
from edgeseg.util import slug


def input_shapes(profile: TargetProfile, channels: int, model_size: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """min/opt/max shapes of the ``image`` input: batch range × (smallest, first, largest) spatial size."""
    sizes = profile.spatial_sizes(model_size)
    by_area = sorted(sizes, key=lambda s: int(np.prod(s)))
    lo, hi = profile.batch[0], profile.batch[2]
    return {"min": (lo, channels, *by_area[0]), "opt": (profile.batch[1], channels, *sizes[0]),
            "max": (hi, channels, *by_area[-1])}


def engine_shapes(artifact: Artifact) -> dict[str, tuple[int, ...]]:
    """The min/opt/max input shapes an artifact's engine is built for, checked (from its manifest details)."""
    shapes = artifact.details.get("shapes")
    ok = isinstance(shapes, dict) and set(shapes) == {"min", "opt", "max"} and all(
        isinstance(v, list) and 3 <= len(v) <= 5 and all(isinstance(n, int) and 0 < n <= 65536 for n in v)
        for v in shapes.values())
    if not ok:
        raise EdgesegError(f"{artifact.name}: details.shapes must hold min/opt/max input shapes of positive integers")
    return {k: tuple(v) for k, v in shapes.items()}


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
    from edgeseg.data.io import atomic_write

    atomic_write(Path(engine_path), lambda tmp: tmp.write_bytes(bytes(serialized)))


def device_key() -> str:
    """``<gpu>-sm<compute capability>-trt<version>`` (``<jetson model>-trt<version>`` on a Jetson): a TensorRT
    engine runs only where this key matches, in a bundle and in an engine cache alike. Torch-free;
    ``EDGESEG_DEVICE_KEY`` overrides (tests, exotic boards)."""
    if os.environ.get("EDGESEG_DEVICE_KEY"):
        return os.environ["EDGESEG_DEVICE_KEY"]
    name = None
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").replace("\x00", "").strip()
        name = slug(model) if model else None
    except OSError:
        pass
    for query in ("name,compute_cap", "name"):  # compute_cap needs a driver from 2022 on
        if name is not None:
            break
        try:
            out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                name = gpu_name_key(out.stdout.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError):
            break
    try:
        import tensorrt

        version = tensorrt.__version__
    except ImportError:
        raise EdgesegError("TensorRT is not installed here: no engine can be built or run") from None
    if name is None:
        raise EdgesegError("no NVIDIA GPU found (no /proc/device-tree/model, no nvidia-smi)")
    return f"{name}-trt{version}"


def gpu_name_key(smi_line: str) -> str:
    """One ``nvidia-smi --query-gpu=name,compute_cap`` line → ``nvidia-h100-80gb-hbm3-sm90``."""
    name, _, capability = smi_line.partition(",")
    capability = capability.strip().replace(".", "")
    return slug(name) + (f"-sm{capability}" if capability else "")
