"""Model registry: ``@register_model`` + ``create_model(name, in_channels, num_classes, **kwargs)``.

Networks of other frameworks are families: ``register_family("monai", factory)`` makes ``create_model("monai:UNet",
…)`` call ``factory("UNet", in_channels, num_classes, **kwargs)``. The built-in families (MONAI,
segmentation_models_pytorch) are in :mod:`edgeseg.models.families`."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

from torch import nn

from edgeseg.errors import EdgesegError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, description: str = ""):
    """Register a model factory ``fn(in_channels, num_classes, **kwargs) -> nn.Module`` under ``name``."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return wrap


def register_family(prefix: str, factory: Callable[..., nn.Module], description: str = "") -> None:
    """Register ``factory(name, in_channels, num_classes, **kwargs) -> nn.Module`` for the names ``prefix:<name>``."""
    if not prefix.isidentifier() or prefix in _FAMILIES:
        raise ValueError(f"model family {prefix!r}: not an identifier, or registered twice")
    _FAMILIES[prefix] = factory
    _DESCRIPTIONS[f"{prefix}:<name>"] = description or (factory.__doc__ or "").strip().splitlines()[0]


def list_models() -> dict[str, str]:
    """Registered model names with a one-line description each."""
    return dict(sorted(_DESCRIPTIONS.items()))


# No segmentation network edgeseg builds has more than a few thousand modules (hybrid ~150, MONAI's UNETR ~350,
# an smp Unet on ResNet-152 ~500): building stops here, so a spec asking for a million layers costs a second
MAX_MODULES = 20_000


class TooManyModules(EdgesegError):
    """A model whose construction registered more than :data:`MAX_MODULES` submodules."""


@contextlib.contextmanager
def _module_budget(name: str):
    """Stop building ``name`` (in this thread) once it registered more than :data:`MAX_MODULES` submodules."""
    from torch.nn.modules.module import register_module_module_registration_hook

    thread, count = threading.get_ident(), [0]

    def hook(module, child_name, child):
        if threading.get_ident() == thread:
            count[0] += 1
            if count[0] > MAX_MODULES:
                raise TooManyModules(f"{name}: more than {MAX_MODULES} modules (no real segmentation network has "
                                     "that many); its arguments ask for an absurd size")

    handle = register_module_module_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def create_model(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; unknown names, bad arguments and absurd sizes raise ``EdgesegError`` (any error
    of the constructor: its arguments come from a checkpoint or a command line)."""
    family = _FAMILIES.get(name.partition(":")[0]) if ":" in name else None
    if name not in _REGISTRY and family is None:
        families = ", ".join(f"{p}:<name>" for p in sorted(_FAMILIES))
        raise EdgesegError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}, {families}")
    if in_channels < 1 or num_classes < 2:
        raise EdgesegError(f"{name}: need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
    try:
        with _module_budget(name):
            if family is not None:
                return family(name.partition(":")[2], in_channels=in_channels, num_classes=num_classes, **kwargs)
            return _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    except EdgesegError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:  # unknown keyword, invalid value, impossible size
        raise EdgesegError(f"{name}: {_first_line(exc)}") from None
    except Exception as exc:  # e.g. MONAI's DynUNet indexing lists of the wrong length: IndexError, AssertionError
        raise EdgesegError(f"{name}: cannot be built from these arguments ({type(exc).__name__}: "
                           f"{_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
