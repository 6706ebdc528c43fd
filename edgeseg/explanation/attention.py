"""Attention-gate coefficients as a native explanation: where each gate of an Attention U-Net or a hybrid lets the
skip connection through (α = sigmoid(ψ), Oktay et al. 2018), read from the reference and from every artifact in
its own runtime, and compared like the maps (rank correlation, top-10 % IoU per gate and case).

A gate is a module with a ``psi`` block ending in a sigmoid (edgeseg's :class:`~edgeseg.models.blocks.AttentionGate`,
MONAI's ``AttentionBlock``). In PyTorch its output is hooked; in an ONNX Runtime or OpenVINO artifact the sigmoid's
tensor — found in the bundle's FP32 ONNX by the gate's weight names, and kept by name through quantization and
conversion — is added as an extra output in memory (:meth:`edgeseg.targets.Target.load_probe`); the artifact's
files and its deployed outputs stay as built. Where a runtime fuses that sigmoid into a quantized op, exposing its
tensor keeps that one op in float.
"""
from __future__ import annotations

import numpy as np

from edgeseg.benchmark.drift import bootstrap_mean_ci
from edgeseg.explanation.metrics import rank_correlation, top_iou

WORST_SHOWN = 3


def gate_modules(model) -> dict[str, object]:
    """``{module name: module}`` of the attention gates of a PyTorch model (empty when it has none)."""
    import torch.nn as nn

    def is_gate(module) -> bool:
        psi = getattr(module, "psi", None)
        return isinstance(psi, nn.Sequential) and len(psi) > 0 and isinstance(psi[-1], nn.Sigmoid)

    return {name: module for name, module in model.named_modules() if name and is_gate(module)}


def torch_probe(model, gates: dict[str, object]):
    """``batch → {gate: α}`` by forward hooks on each gate's ``psi`` (the model's own outputs are discarded)."""
    import torch

    def probe(batch: np.ndarray) -> dict[str, np.ndarray]:
        seen: dict[str, np.ndarray] = {}
        hooks = [gate.psi.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(
            name, out.detach().float().cpu().numpy())) for name, gate in gates.items()]
        try:
            with torch.inference_mode():
                model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        finally:
            for hook in hooks:
                hook.remove()
        return seen

    return probe


def gate_tensors(fp32_onnx: bytes, gates: list[str]) -> dict[str, str]:
    """``{gate: name of its sigmoid's output tensor}`` in an FP32 ONNX export: the Sigmoid fed (within a few
    nodes) by the Conv whose weight is the gate's ``psi`` parameter. Gates not found are left out."""
    import onnx

    graph = onnx.load_model_from_string(fp32_onnx).graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = {}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        gate = next((g for g in gates if node.input[1].startswith(f"{g}.psi.")), None)
        if gate is not None and (tensor := _sigmoid_after(node, consumers)) is not None:
            found[gate] = tensor
    return found


def _sigmoid_after(node, consumers: dict, depth: int = 3) -> str | None:
    frontier = [node]
    for _ in range(depth):
        frontier = [c for n in frontier for out in n.output for c in consumers.get(out, [])]
        for candidate in frontier:
            if candidate.op_type == "Sigmoid":
                return candidate.output[0]
    return None


def artifact_probe(bundle, artifact, tensors: dict[str, str], threads: int | None):
    """``batch → {gate: α}`` of a bundle artifact in its own runtime, or a string saying why not."""
    from edgeseg.errors import EdgesegError
    from edgeseg.targets import get_target

    try:
        probe = get_target(artifact.runtime).load_probe(bundle, artifact, list(tensors.values()), threads)
    except EdgesegError as exc:
        return str(exc)
    if probe is None:
        return f"{artifact.runtime} cannot expose internal tensors here"
    gate_of = {tensor: gate for gate, tensor in tensors.items()}
    return lambda batch: {gate_of[t]: value for t, value in probe(batch).items()}


def attention_drift(reference: dict, artifact: dict) -> dict:
    """Per gate, over the cases both have: ρ and top-10 % IoU of the coefficients (bootstrap CIs) and the worst
    cases by ρ. ``reference``/``artifact``: ``{case: {gate: α}}``."""
    out = {}
    gates = sorted({g for maps in reference.values() for g in maps})
    for gate in gates:
        rows = {cid: (rank_correlation(reference[cid][gate], artifact[cid][gate]),
                      top_iou(reference[cid][gate], artifact[cid][gate]))
                for cid in reference if gate in reference[cid] and gate in artifact.get(cid, {})}
        if not rows:
            continue
        rhos = [np.nan if r is None else r for r, _ in rows.values()]
        ranked = sorted((-1.0 if r is None else r, cid) for cid, (r, _) in rows.items())
        out[gate] = {"rank_correlation": bootstrap_mean_ci(rhos),
                     "top10_iou": bootstrap_mean_ci([iou for _, iou in rows.values()]),
                     "worst": [{"case": cid, "rank_correlation": rho} for rho, cid in ranked[:WORST_SHOWN]],
                     "cases": len(rows)}
    return out
