"""Grad-CAM for segmentation on a PyTorch model (the FP32 reference, or a pruned model), at documented layers.

The target of label ``l`` is the sum of its logits over the reference's predicted region (what grad-cam's
``SemanticSegmentationTarget`` takes): the layer's activations are weighted by the spatial mean of that target's
gradient, summed over channels, rectified and resized to the model input. Layers per architecture: the bottleneck
(the deepest CNN features, for the hybrid the transformer's output back in CNN form) and the last decoder stage.
"""
from __future__ import annotations

import numpy as np

GRADCAM_LAYERS = {  # edgeseg architecture class → {map name: module path}
    "UNet": {"bottleneck": "encoder.stages.-1", "last_decoder": "decoder.ups.-1"},
    "HybridTransUNet": {"bottleneck": "from_tokens", "last_decoder": "decoder.ups.-1"},
}


def gradcam_layers(model) -> dict[str, object] | None:
    """``{map name: module}`` for an edgeseg architecture; None for a model with no documented layer (a network
    imported from another framework: it is explained by the forward-only maps alone)."""
    paths = GRADCAM_LAYERS.get(type(model).__name__)
    if paths is None:
        return None
    layers = {}
    for name, path in paths.items():
        module = model
        for part in path.split("."):
            module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
        layers[name] = module
    return layers


def gradcam_maps(model, x: np.ndarray, regions: np.ndarray) -> dict[str, np.ndarray]:
    """``{layer name: (labels, *spatial)}`` Grad-CAM maps of one model input ``x`` (C, *spatial) for each label's
    region; an empty region gives an all-zero map. ``{}`` when the architecture has no documented layer."""
    import torch
    import torch.nn.functional as F

    layers = gradcam_layers(model)
    if not layers:
        return {}
    captured: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
             for name, module in layers.items()]
    try:
        model.eval()
        with torch.enable_grad():
            inp = torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32))
            logits = model(inp)
            maps = {name: np.zeros((len(regions), *x.shape[1:]), np.float64) for name in layers}
            for label, region in enumerate(regions):
                if not region.any():
                    continue
                target = (logits[0, label + 1] * torch.from_numpy(region)).sum()
                grads = torch.autograd.grad(target, [captured[n] for n in layers], retain_graph=True)
                for (name, _), grad in zip(layers.items(), grads):
                    activation = captured[name].detach()
                    weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
                    cam = F.relu((weights * activation).sum(1, keepdim=True))
                    mode = "bilinear" if cam.ndim == 4 else "trilinear"
                    cam = F.interpolate(cam, size=x.shape[1:], mode=mode, align_corners=False)
                    maps[name][label] = cam[0, 0].double().numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return maps
