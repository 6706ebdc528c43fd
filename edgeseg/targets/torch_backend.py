"""PyTorch target: the FP32 reference (the edgeseg checkpoint itself, pruned when the bundle was pruned)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import EdgesegError
from .base import Artifact, BuildRequest, module_missing


class TorchRunner:
    """An edgeseg checkpoint in PyTorch: eager (the reference) or ``torch.compile``d, FP32 or FP16 on CUDA."""

    def __init__(self, checkpoint: Path | bytes, threads: int | None = None, device: str = "cpu",
                 compile: bool = False, half: bool = False):
        import torch

        from ..checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(int(threads))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgesegError(f"device {device!r}: PyTorch sees no CUDA GPU here")
        if half and not device.startswith("cuda"):
            raise EdgesegError("FP16 PyTorch runs on a CUDA device only")
        self.model, self.spec = load_checkpoint(checkpoint)
        self.device, self.dtype = device, torch.float16 if half else torch.float32
        self.model = self.model.to(device, self.dtype).eval()
        if compile:
            self.model = torch.compile(self.model)
        mode = "torch.compile (inductor)" if compile else "eager"
        self.executed_precision = f"{'fp16' if half else 'fp32'} (PyTorch {torch.__version__} {mode}, {device})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            return self.model(x).float().cpu().numpy()


class TorchTarget:
    name = "torch"
    default_profiles = {"fp32": "torch-fp32"}

    def missing(self, build: bool = False) -> str | None:
        return module_missing("torch")

    def build(self, request: BuildRequest) -> Artifact:
        if request.checkpoint is None or request.profile.precision != "fp32":
            raise EdgesegError("the PyTorch target holds the FP32 checkpoint only")
        name = f"{request.profile.name}.ckpt"
        shutil.copyfile(request.checkpoint, request.out_dir / name)
        return Artifact(name=request.profile.name, runtime=self.name, precision="fp32", files={"model": name},
                        profile=request.profile.name, device=request.profile.device)

    def load(self, bundle_dir: Path, artifact: dict, threads: int | None = None) -> TorchRunner:
        details = artifact.get("details") or {}
        from ..bundle import artifact_bytes

        return TorchRunner(artifact_bytes(bundle_dir, artifact, "model"), threads, artifact.get("device", "cpu"),
                           compile=bool(details.get("compile")), half=artifact["precision"] == "fp16")
