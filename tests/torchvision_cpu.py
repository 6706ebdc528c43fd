"""This test machine's torch is a CPU build from local disk, while PyPI's torchvision wheel is a CUDA build whose
C++ ops library needs libtorch_cuda.so: ``import torchvision`` (timm, smp's encoders) then fails registering
fake kernels for ``torchvision::nms``/``qnms``. Declaring those two op schemas lets its Python side import;
no segmentation network calls them. A matching torch + torchvision install (same index) needs nothing of this."""
import importlib.util
import os

import torch

_KEEP = []


def _ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    folder = list(spec.submodule_search_locations)[0]
    libs = [f for f in os.listdir(folder) if f.startswith("_C") and f.endswith(".so")]
    try:
        return bool(libs) and torch.ops.load_library(os.path.join(folder, libs[0])) is None
    except (OSError, RuntimeError):
        return False


def _declared() -> bool:  # already declared in this process (e.g. by a sitecustomize loading this file)
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU") or \
            bool(torch._C._jit_get_schemas_for_operator("torchvision::nms"))
    except RuntimeError:
        return False


if not _declared() and not _ops_load():
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(library)
