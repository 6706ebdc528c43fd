"""The one FP32 ONNX exporter: dynamic batch (and spatial size where the model allows), checked, parity-tested."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgeseg.data.io import atomic_write
from edgeseg.errors import EdgesegError
from edgeseg.progress import silenced

OPSET = 18


def export_onnx(model, path: str | Path, example_shape: tuple[int, ...], dynamic_spatial: bool = True,
                metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` (eval mode) to ``path`` with input ``image`` and output ``logits``.

    ``example_shape`` is ``(batch, channels, *spatial)``; the batch axis is always dynamic. The file is
    written whole (no external data), checked with ``onnx.checker``, and tagged with ``metadata``.
    """
    import onnx
    import torch

    model = model.eval()
    example = torch.randn(*example_shape)
    dims = len(example_shape) - 2
    axes = {0: torch.export.Dim.DYNAMIC}
    if dynamic_spatial:
        axes.update({2 + i: torch.export.Dim.DYNAMIC for i in range(dims)})

    def write(tmp: Path) -> None:
        # torch's ONNX registry logs "torchvision is not installed. Skipping torchvision::…" for each
        # torchvision op on every export; edgeseg models use none of them
        with warnings.catch_warnings(), silenced("torch.onnx._internal.exporter._registration",
                                                 "torchvision is not installed"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"],
                                        output_names=["logits"], dynamic_shapes=({**axes},),
                                        opset_version=OPSET, external_data=False, verbose=False)
            program.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        for key, value in (metadata or {}).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    try:
        atomic_write(Path(path), write)
    except EdgesegError:
        raise
    except Exception as exc:
        raise EdgesegError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return Path(path)


def onnx_parity(model, onnx_path: str | Path, inputs: np.ndarray) -> dict:
    """Max |Δlogit| and argmax-mask agreement between PyTorch and ONNX Runtime on ``inputs``."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = model.eval()(torch.from_numpy(inputs)).numpy()
    got = sess.run(None, {"image": inputs})[0]
    return {"max_abs_diff": float(np.abs(ref - got).max()),
            "mask_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}
