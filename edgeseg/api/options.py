"""What the API functions share: refusing unknown keyword options, Dice limits in any of their forms, name lists,
and a model given as a checkpoint path or as a loaded model with its spec."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from edgeseg.errors import UsageError


def check_options(options: dict, allowed: Iterable[str], call: str) -> None:
    """Refuse keyword options ``call`` does not know, naming them and the ones it takes."""
    allowed = set(allowed)
    if unknown := sorted(set(options) - allowed):
        raise UsageError(f"{call}: unknown option(s) {', '.join(map(repr, unknown))}; it takes "
                           f"{', '.join(sorted(allowed))}")


def names(value: str | Iterable[str]) -> list[str]:
    """``"onnxruntime,openvino"`` or ``["onnxruntime", "openvino"]`` → a list of names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def dice_limits(max_dice_drop: float | str | dict):
    """Dice limits in points as :class:`~edgeseg.tuning.search.DiceLimits`: ``0.5``, ``"lung=0.3,nodule=1"``,
    ``"0.5,nodule=1"`` or ``{"nodule": 1.0}`` (labels not named: 0.5 points)."""
    from edgeseg.gating.check import parse_dice_limits
    from edgeseg.tuning.search import DiceLimits

    default, per_label = parse_dice_limits(max_dice_drop)
    return DiceLimits.parse(0.5 if default is None else default, ",".join(f"{k}={v}" for k, v in per_label.items()))


def _model_and_spec(model, spec):
    """``(checkpoint path, None)`` or ``(module, spec)``; a ``(module, spec)`` pair as ``load_checkpoint`` returns
    it counts as a module with its spec."""
    from edgeseg.checkpoint import CheckpointSpec

    if isinstance(model, tuple) and len(model) == 2 and spec is None:
        model, spec = model
    if isinstance(model, (str, os.PathLike)):
        if spec is not None:
            raise UsageError("spec= goes with a loaded model; a checkpoint file carries its own spec")
        return Path(model), None
    if not hasattr(model, "state_dict"):
        raise UsageError(f"model: expected a checkpoint path or a PyTorch model, got {type(model).__name__}")
    if not isinstance(spec, CheckpointSpec):
        raise UsageError("a loaded model needs spec=: the CheckpointSpec that edgeseg.checkpoint.load_checkpoint "
                           "returned with it (or pass the checkpoint path)")
    return model, spec


def checkpoint_file(model, spec, folder: Path) -> Path:
    """The checkpoint to read: ``model`` itself when it is a path, else the loaded model saved into ``folder``."""
    model, spec = _model_and_spec(model, spec)
    if spec is None:
        return model
    from edgeseg.checkpoint import save_checkpoint

    return save_checkpoint(Path(folder) / f"{spec.arch}.ckpt", model, spec)


def loaded_model(model, spec):
    """``(module, spec)``: the checkpoint at a path loaded, or the loaded model given with its spec."""
    model, spec = _model_and_spec(model, spec)
    if spec is not None:
        return model, spec
    from edgeseg.checkpoint import load_checkpoint

    return load_checkpoint(model)


def model_spec(model, spec):
    """The :class:`~edgeseg.checkpoint.CheckpointSpec` of a checkpoint path (read without torch) or loaded model."""
    model, spec = _model_and_spec(model, spec)
    if spec is not None:
        return spec
    from edgeseg.checkpoint import read_spec

    return read_spec(model)
