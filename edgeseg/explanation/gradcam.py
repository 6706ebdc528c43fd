"""Grad-CAM for segmentation on a PyTorch model (the FP32 reference, or a pruned model), at documented layers.

The target of label ``l`` is the sum of its logits over the reference's predicted region (what grad-cam's
``SemanticSegmentationTarget`` takes): the layer's activations are weighted by the spatial mean of that target's
gradient, summed over channels, rectified and resized to the model input. Grad-CAM++ (Chattopadhay et al., 2018;
opt-in) weights each channel by the positive gradients instead, each position by
α = g² / (2g² + ΣA·g³) — the closed form grad-cam's ``GradCAMPlusPlus`` uses — from the same backward pass.
Layers per architecture: the bottleneck (the deepest CNN features, for the hybrid the transformer's output back in
CNN form) and the last decoder stage. Maps are named ``gradcam:<layer>`` and ``gradcam++:<layer>``.
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


GRADIENT_VARIANTS = ("gradcam", "gradcam++")


def gradcam_maps(model, x: np.ndarray, regions: np.ndarray,
                 variants: tuple[str, ...] = ("gradcam",)) -> dict[str, np.ndarray]:
    """``{"<variant>:<layer>": (labels, *spatial)}`` maps of one model input ``x`` (C, *spatial) for each label's
    region (``variants`` of :data:`GRADIENT_VARIANTS`); an empty region gives an all-zero map. ``{}`` when the
    architecture has no documented layer."""
    import torch

    layers = gradcam_layers(model)
    if not layers or not variants:
        return {}
    captured: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
             for name, module in layers.items()]
    try:
        model.eval()
        with torch.enable_grad():
            inp = torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32))
            logits = model(inp)
            maps = {f"{v}:{name}": np.zeros((len(regions), *x.shape[1:]), np.float64)
                    for v in variants for name in layers}
            for label, region in enumerate(regions):
                if not region.any():
                    continue
                target = (logits[0, label + 1] * torch.from_numpy(region)).sum()
                grads = torch.autograd.grad(target, [captured[n] for n in layers], retain_graph=True)
                for name, grad in zip(layers, grads):
                    activation = captured[name].detach()
                    for variant in variants:
                        maps[f"{variant}:{name}"][label] = _cam(activation, grad, variant, x.shape[1:])
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def _cam(activation, grad, variant: str, size: tuple[int, ...]) -> np.ndarray:
    """One layer's map for one label, rectified and resized to the model input."""
    import torch
    import torch.nn.functional as F

    spatial = tuple(range(2, grad.ndim))
    if variant == "gradcam":
        weights = grad.mean(dim=spatial, keepdim=True)
    else:  # Grad-CAM++: α per position; where the gradient is 0, α is 0
        g2 = grad.pow(2)
        denominator = 2 * g2 + activation.sum(dim=spatial, keepdim=True) * g2 * grad
        alpha = torch.where(grad != 0, g2 / (denominator + 1e-7), torch.zeros_like(grad))
        weights = (alpha * F.relu(grad)).sum(dim=spatial, keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear" if cam.ndim == 4 else "trilinear", align_corners=False)
    return cam[0, 0].double().numpy()
