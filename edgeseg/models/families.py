"""Networks of other frameworks as edgeseg model families (``create_model("monai:UNet", …)``): built by their own
library from the names and keyword arguments a checkpoint records, behind edgeseg's input adapter
(:mod:`edgeseg.models.adapted`). Each library is imported on first use only."""
from __future__ import annotations

from edgeseg.errors import EdgesegError
from edgeseg.models.adapted import adapted
from edgeseg.models.registry import register_family

MONAI_NETWORKS = ("UNet", "BasicUNet", "AttentionUnet", "SegResNet", "UNETR", "SwinUNETR", "DynUNet", "FlexibleUNet",
                  "VNet", "HighResNet")


def _library(module: str, arch: str):
    import importlib

    from edgeseg.progress import silenced

    try:
        with silenced("monai.data.nvimgcodec_pydicom_plugin", "nvImageCodec is not available"):  # a GPU decoder
            return importlib.import_module(module)
    except ImportError:
        raise EdgesegError(f"{arch}: needs {module.split('.')[0]} (pip install 'edgeseg[frameworks]')") from None
    except RuntimeError as exc:  # e.g. a CUDA torchvision next to a CPU torch: "operator torchvision::nms does not exist"
        raise EdgesegError(f"{arch}: {module.split('.')[0]} fails to import ({str(exc).splitlines()[0][:120]}); "
                           "install torch and torchvision from the same index") from None


def monai_network(name: str, in_channels: int, num_classes: int, **kwargs):
    """MONAI networks by name (monai.networks.nets: UNet, AttentionUnet, SegResNet, UNETR, SwinUNETR, DynUNet …)."""
    if name not in MONAI_NETWORKS:
        raise EdgesegError(f"monai:{name}: not a MONAI segmentation network edgeseg builds ({', '.join(MONAI_NETWORKS)})")
    nets = _library("monai.networks.nets", f"monai:{name}")
    return adapted(lambda n_in, **kw: getattr(nets, name)(in_channels=n_in, out_channels=num_classes, **kw),
                   in_channels, kwargs)


def smp_network(name: str, in_channels: int, num_classes: int, **kwargs):
    """segmentation_models_pytorch networks by name (Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Segformer …)."""
    smp = _library("segmentation_models_pytorch", f"smp:{name}")
    kwargs.pop("encoder_weights", None)  # the weights come from the file, never from a download
    return adapted(lambda n_in, **kw: smp.create_model(name, encoder_weights=None, in_channels=n_in,
                                                       classes=num_classes, **kw), in_channels, kwargs)

register_family("monai", monai_network)
register_family("smp", smp_network)
