"""Running a TensorRT engine: :class:`TrtPredictor`, and whether this machine can (:func:`gpu_missing`).

Device buffers come from torch when it is installed (workstations), else from cuda-python (the torch-free
Jetson image); the cuda-python path is untested here (no GPU).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.targets.base import module_missing


class TrtPredictor:
    """A deserialized engine as a :class:`~edgeseg.targets.base.Predictor` (input ``image``, output ``logits``)."""

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
