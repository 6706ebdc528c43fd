"""PyTorch target: the FP32 reference (the edgeseg checkpoint itself, pruned when the bundle was pruned), and
:class:`TorchPredictor`, the one way edgeseg runs a PyTorch model (``edgeseg.inference.torch_predictor`` too)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.targets.base import Artifact, BuildRequest, Target, module_missing
from edgeseg.targets.registry import register_target


class TorchPredictor:
    """A PyTorch module as a :class:`~edgeseg.targets.base.Predictor`: eval mode, no grad, float32 batch in,
    float32 logits out, computed on the module's device in its dtype (``torch.compile``d on request)."""

    def __init__(self, model, compile: bool = False):
        import torch

        model.eval()
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        self.model = torch.compile(model) if compile else model
        mode = "torch.compile (inductor)" if compile else "eager"
        precision = "fp16" if self.dtype == torch.float16 else "fp32"
        self.executed_precision = f"{precision} (PyTorch {torch.__version__} {mode}, {self.device.type})"

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | bytes, threads: int | None = None, device: str = "cpu",
                        compile: bool = False, half: bool = False) -> TorchPredictor:
        """An edgeseg checkpoint (a path or its verified bytes) on ``device``, FP16 on CUDA only."""
        import torch

        from edgeseg.checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(int(threads))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgesegError(f"device {device!r}: PyTorch sees no CUDA GPU here")
        if half and not device.startswith("cuda"):
            raise EdgesegError("FP16 PyTorch runs on a CUDA device only")
        model, spec = load_checkpoint(checkpoint)
        predictor = cls(model.to(device, torch.float16 if half else torch.float32), compile=compile)
        predictor.spec = spec
        return predictor

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            return self.model(x).float().cpu().numpy()


@register_target
class TorchTarget(Target):
    name = "torch"
    aliases = ("pytorch",)
    default_profiles = {"fp32": "torch-fp32"}
    tool_dists = ("torch",)
    model_suffix = ".ckpt"

    def missing(self, build: bool = False) -> str | None:
        return module_missing("torch")

    def build(self, request: BuildRequest) -> Artifact:
        if request.checkpoint is None or request.profile.precision != "fp32":
            raise EdgesegError("the PyTorch target holds the FP32 checkpoint only")
        name = f"{request.profile.name}.ckpt"
        shutil.copyfile(request.checkpoint, request.out_dir / name)
        return Artifact(name=request.profile.name, runtime=self.name, precision="fp32", files={"model": name},
                        profile=request.profile.name, device=request.profile.device)

    def load(self, bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> TorchPredictor:
        from edgeseg.bundle.members import artifact_bytes

        return TorchPredictor.from_checkpoint(artifact_bytes(bundle_dir, artifact, "model"), threads, artifact.device,
                                              compile=bool(artifact.details.get("compile")),
                                              half=artifact.precision == "fp16")

    def workload_runner(self, path: Path, threads: int | None, rank: int):
        from edgeseg.benchmark.workload import TorchWorkload

        return TorchWorkload(path, threads)
