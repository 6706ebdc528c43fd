"""Networks of other frameworks as edgeseg model families (``create_model("monai:UNet", …)``): built by their own
library from the names and keyword arguments a checkpoint records, behind edgeseg's input adapter
(:mod:`edgeseg.models.adapted`). Each library is imported on first use only."""
from __future__ import annotations

from edgeseg.errors import EdgesegError
from edgeseg.models.adapted import adapted
from edgeseg.models.registry import register_family

MONAI_NETWORKS = ("UNet", "BasicUNet", "AttentionUnet", "SegResNet", "UNETR", "SwinUNETR", "DynUNet", "FlexibleUNet",
                  "VNet", "HighResNet")


EXTRAS = {"monai": "monai", "segmentation_models_pytorch": "smp", "dynamic_network_architectures": "nnunet"}


def _library(module: str, arch: str):
    import importlib

    from edgeseg.progress import silenced

    try:
        with silenced("monai.data.nvimgcodec_pydicom_plugin", "nvImageCodec is not available"):  # a GPU decoder
            return importlib.import_module(module)
    except ImportError:
        package = module.split('.')[0]
        raise EdgesegError(f"{arch}: needs {package} (pip install 'edgeseg[{EXTRAS.get(package, 'frameworks')}]')") from None
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

# nnU-Net plans name classes and torch layers by import path; only these are built (a plan is data, never code)
NNUNET_NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet")
NNUNET_LAYERS = {f"{module}.{name}": name for module in ("torch.nn", "torch.nn.modules.conv", "torch.nn.modules.instancenorm",
                                                          "torch.nn.modules.batchnorm", "torch.nn.modules.dropout",
                                                          "torch.nn.modules.activation")
                 for name in ("Conv2d", "Conv3d", "InstanceNorm2d", "InstanceNorm3d", "BatchNorm2d", "BatchNorm3d",
                              "Dropout", "Dropout2d", "Dropout3d", "LeakyReLU", "ReLU", "PReLU", "GELU", "ELU")}
NNUNET_LAYER_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def nnunet_network(name: str, in_channels: int, num_classes: int, **kwargs):
    """nnU-Net v2 networks (dynamic_network_architectures: PlainConvUNet, ResidualEncoderUNet) from a plan's
    ``arch_kwargs``, deep supervision off; layer classes only from an allow-list of torch layers."""
    if name not in NNUNET_NETWORKS:
        raise EdgesegError(f"nnunet:{name}: not a network edgeseg builds from nnU-Net plans ({', '.join(NNUNET_NETWORKS)})")
    from torch import nn

    unet = _library("dynamic_network_architectures.architectures.unet", f"nnunet:{name}")
    built = dict(kwargs)
    for key in NNUNET_LAYER_KEYS:
        value = built.get(key)
        if value is None:
            continue
        if value not in NNUNET_LAYERS:
            raise EdgesegError(f"nnunet:{name}: {key} {str(value)[:80]!r} is not a torch layer edgeseg builds")
        built[key] = getattr(nn, NNUNET_LAYERS[value])
    return adapted(lambda n_in, **kw: getattr(unet, name)(input_channels=n_in, num_classes=num_classes,
                                                          deep_supervision=False, **kw), in_channels, built)


register_family("monai", monai_network)
register_family("smp", smp_network)
register_family("nnunet", nnunet_network)
