"""nnU-Net's own inference for the import check: ``nnUNetPredictor`` set up as nnU-Net's trainer sets it up for
its final validation (``manual_initialization``, with the weights edgeseg read safely — nnU-Net's own loader
would unpickle the checkpoint with ``weights_only=False``), the image read by the plan's reader, mirroring as
imported, on the CPU. It returns nnU-Net's label map in the image's own geometry."""
from __future__ import annotations

import contextlib
import copy
import sys

import numpy as np


class NnUNetReference:
    def __init__(self, model, plans: dict, config_name: str, dataset: dict, checkpoint: dict, mirroring: bool = False):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans_manager = PlansManager(copy.deepcopy(plans))
        with _prints_to_stderr():
            self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                             perform_everything_on_device=False, device=torch.device("cpu"),
                                             allow_tqdm=False)
        self.predictor.manual_initialization(
            copy.deepcopy(model), plans_manager, plans_manager.get_configuration(config_name),
            [checkpoint["network_weights"]], dataset, str(checkpoint.get("trainer_name", "nnUNetTrainer")),
            checkpoint.get("inference_allowed_mirroring_axes"))
        self.reader = plans_manager.image_reader_writer_class()
        self.volumes = len(plans_manager.get_configuration(config_name).patch_size) == 3

    def __call__(self, image_path) -> np.ndarray:
        paths = [str(p) for p in (image_path if isinstance(image_path, list) else [image_path])]
        data, properties = self.reader.read_images(paths)
        with _prints_to_stderr():
            segmentation = self.predictor.predict_single_npy_array(data, properties, None, None, False)
        segmentation = np.asarray(segmentation).astype(np.uint8)
        if self.volumes:
            return segmentation.transpose(2, 1, 0)  # nnU-Net's (z, y, x) on edgeseg's (x, y, z)
        return segmentation[0]  # (1, H, W): nnU-Net's 2D images are one-slice volumes


def _prints_to_stderr():
    """nnU-Net prints to stdout (e.g. a CUDA remark on every CPU predictor): keep stdout for edgeseg's --json."""
    return contextlib.redirect_stdout(sys.stderr)
