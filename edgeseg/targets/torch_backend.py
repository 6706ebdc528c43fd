"""PyTorch target: the FP32 reference (the edgeseg checkpoint itself, pruned when the bundle was pruned)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import EdgesegError
from .base import Artifact, BuildRequest, module_missing


class TorchRunner:
    def __init__(self, checkpoint: Path, threads: int | None = None, device: str = "cpu"):
        import torch

        from ..checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.spec = load_checkpoint(checkpoint)
        self.device = device
        self.model = self.model.to(device).eval()
        self.executed_precision = f"fp32 (PyTorch {torch.__version__} eager, {device})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
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
        return TorchRunner(Path(bundle_dir) / artifact["files"]["model"], threads)
