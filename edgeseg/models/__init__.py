"""Model zoo: ``create_model(name, in_channels, num_classes, **kwargs)``; ``list_models()``."""
from edgeseg.models import families, hybrid, unet  # noqa: F401  (registers the models)
from edgeseg.models.registry import create_model, list_models, register_family, register_model

__all__ = ["create_model", "list_models", "register_family", "register_model"]
