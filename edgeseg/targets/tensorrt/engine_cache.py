"""TensorRT engines built on the device from a bundle's ONNX and cached outside the (possibly read-only)
bundle, keyed by artifact + device + TensorRT version: the Jetson entrypoint's first start builds, later
starts reuse. Torch-free (the device image has TensorRT, not torch).

The builder is ``trtexec`` (JetPack ships it in /usr/src/tensorrt/bin) with the command recorded in the
artifact, or the TensorRT Python API when ``trtexec`` is absent; ``EDGESEG_TRT_BUILDER`` replaces it with
any command taking trtexec's ``--onnx=`` / ``--saveEngine=`` arguments (how the tests run it without a GPU).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from edgeseg.artifact import Artifact
from edgeseg.data.io import atomic_write
from edgeseg.errors import EdgesegError
from edgeseg.housekeeping import work_dir
from edgeseg.targets.tensorrt.engine import build_engine, device_key, engine_shapes, trtexec_command
from edgeseg.validation import expect_int

TRTEXEC_PATHS = ("trtexec", "/usr/src/tensorrt/bin/trtexec")


def cached_engine_path(cache: Path, artifact: Artifact) -> Path:
    """Where this artifact's engine for this device lives in ``cache`` (keyed by the ONNX file's sha256)."""
    return Path(cache) / f"{artifact.name}-{artifact.hashes['model']['sha256'][:12]}-{device_key()}.engine"


@contextlib.contextmanager
def verified_copy(bundle_dir: Path, artifact: Artifact):
    """A private copy of the artifact's ONNX made from its verified bytes, for builders that need a path."""
    from edgeseg.bundle.members import artifact_bytes

    data = artifact_bytes(bundle_dir, artifact, "model")
    with work_dir("edgeseg-trt") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        yield path


def _builder_command(artifact: Artifact, onnx_path: Path, engine_path: Path) -> list[str] | None:
    """The trtexec-style build command, or None to use the TensorRT Python API."""
    custom = os.environ.get("EDGESEG_TRT_BUILDER")
    trtexec = custom or next((p for p in TRTEXEC_PATHS if shutil.which(p)), None)
    if not trtexec:
        return None
    # rebuilt from the artifact's structured facts, never the recorded command line: a manifest string is not
    # something to execute (it could name a plugin library)
    line = trtexec_command(str(onnx_path), str(engine_path), engine_shapes(artifact), artifact.precision,
                           artifact.float_nodes, workspace_mib(artifact))
    return [*shlex.split(trtexec), *shlex.split(line)[1:]]


def workspace_mib(artifact: Artifact) -> int:
    """The builder workspace (MiB) the artifact records, checked."""
    return expect_int(artifact.details.get("workspace_mib", 1024), f"{artifact.name}.details.workspace_mib", 16, 1 << 20)


def ensure_engine(bundle_dir: Path, artifact: Artifact, cache: Path) -> tuple[Path, bool]:
    """``(engine path, built now)``: reuse the cached engine for this device or build it (atomically) from
    the artifact's verified ONNX bytes."""
    engine = cached_engine_path(cache, artifact)
    if engine.is_file() and engine.stat().st_size > 0:
        return engine, False
    Path(cache).mkdir(parents=True, exist_ok=True)
    with verified_copy(bundle_dir, artifact) as onnx_path:
        command = _builder_command(artifact, onnx_path, engine)
        if command is None:
            build_engine(onnx_path, engine, engine_shapes(artifact), artifact.precision, artifact.float_nodes,
                         workspace_mib(artifact))
            return engine, True

        def build(tmp: Path) -> None:
            argv = [a.replace(f"--saveEngine={engine}", f"--saveEngine={tmp}") for a in command]
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise EdgesegError(f"engine build failed ({shlex.join(argv[:1])}): {tail[0][:300]}")

        atomic_write(engine, build)
    return engine, True
