"""A small nnU-Net v2 trained model folder for tests, written the way nnU-Net writes one: a 2D image dataset of
uneven sizes with zero borders (so the crop to non-zero, the resampling and several sliding windows all act), a
plan of nnU-Net's format (network built by nnU-Net's own ``get_network_from_plans``), and a
``fold_0/checkpoint_final.pth`` holding what nnU-Net's trainer saves (weights, optimizer state, a log of numpy
floats, its init arguments with a ``torch.device``). The network is trained for a few steps so its masks mean
something."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from edgeseg.data.io import Geometry, write_array
from edgeseg.data.phantom import phantom_case

LABELS = {"background": 0, "organ": 1, "lesion": 2}
ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv2d",
                        "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]],
                        "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
RESAMPLING = {"resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_seg": "resample_data_or_seg_to_shape",
              "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
              "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
              "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                      "force_separate_z": None}}


def write_dataset(root: Path, cases: int = 10, seed: int = 5) -> Path:
    """Phantom cases of uneven sizes, each with a zero border on two sides, in nnU-Net's raw layout."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(cases):
        shape = (int(rng.integers(96, 150)), int(rng.integers(96, 150)))
        image, label = phantom_case(rng, shape, 1)
        image = np.maximum(image, 1)  # zero only in the border below
        top, left = int(rng.integers(3, 20)), int(rng.integers(3, 20))
        image = np.pad(image, [(0, 0), (top, 0), (left, 0)])
        label = np.pad(label, [(top, 0), (left, 0)])
        cid = f"case_{i:03d}"
        ids.append(cid)
        write_array(root / "imagesTr" / f"{cid}_0000.png", image[0], Geometry((1.0, 1.0)))
        write_array(root / "labelsTr" / f"{cid}.png", label, Geometry((1.0, 1.0)))
    meta = {"channel_names": {"0": "phantom"}, "labels": LABELS, "numTraining": cases, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "splits.json").write_text(json.dumps({"train": ids[4:], "val": ids[:4]}))
    return root


ARCH_3D = {"network_class_name": ARCH["network_class_name"], "_kw_requires_import": ARCH["_kw_requires_import"],
           "arch_kwargs": {**ARCH["arch_kwargs"], "conv_op": "torch.nn.modules.conv.Conv3d",
                           "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                           "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                           "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}}


def write_volumes(root: Path, cases: int = 8, seed: int = 7, spacing=(0.9, 0.9, 3.0)) -> Path:
    """Two-channel phantom volumes (x, y, z) of uneven sizes, anisotropic ``spacing`` (the slices 3.3× thicker
    than the pixels: nnU-Net resamples them slice by slice), a zero border on two sides, as NIfTI."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(cases):
        shape = (int(rng.integers(36, 50)), int(rng.integers(36, 50)), int(rng.integers(13, 19)))
        image, label = phantom_case(rng, shape, 2)
        image = np.maximum(image, 1)
        pad = [(0, 0), (int(rng.integers(2, 6)), 0), (0, int(rng.integers(2, 6))), (0, 0)]
        image, label = np.pad(image, pad), np.pad(label, pad[1:])
        cid = f"vol_{i:03d}"
        ids.append(cid)
        for c in range(2):
            write_array(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", image[c].astype(np.float32), Geometry(spacing))
        write_array(root / "labelsTr" / f"{cid}.nii.gz", label, Geometry(spacing))
    meta = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": LABELS, "numTraining": cases,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "splits.json").write_text(json.dumps({"train": ids[3:], "val": ids[:3]}))
    return root


def plans_3d(transpose=(0, 2, 1), spacing=(2.5, 1.2, 1.2), patch=(16, 32, 32)) -> dict:
    """A plan with one ``3d_fullres`` configuration of NIfTI volumes (SimpleITKIO), z-scored inside the non-zero
    region, with ``transpose`` (spacing and patch are on the transposed axes, as nnU-Net writes them)."""
    plan = plans(spacing=spacing, patch=patch)
    config = plan["configurations"].pop("2d")
    config.update(data_identifier="nnUNetPlans_3d_fullres", architecture=copy.deepcopy(ARCH_3D),
                  normalization_schemes=["ZScoreNormalization"] * 2, use_mask_for_norm=[True, True],
                  median_image_size_in_voxels=[16.0, 40.0, 40.0])
    plan["foreground_intensity_properties_per_channel"]["1"] = plan["foreground_intensity_properties_per_channel"]["0"]
    return {**plan, "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose),
            "transpose_backward": [list(transpose).index(a) for a in range(3)],
            "original_median_spacing_after_transp": [3.0, 0.9, 0.9], "configurations": {"3d_fullres": config}}


def plans(normalization: str = "ZScoreNormalization", spacing=(2.0, 2.0), patch=(48, 48)) -> dict:
    """A plan in nnU-Net's format with one ``2d`` configuration."""
    config = {"data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 4,
              "patch_size": list(patch), "median_image_size_in_voxels": [60.0, 60.0], "spacing": list(spacing),
              "normalization_schemes": [normalization], "use_mask_for_norm": [False], **copy.deepcopy(RESAMPLING),
              "architecture": copy.deepcopy(ARCH), "batch_dice": True}
    return {"dataset_name": "Dataset999_Phantom", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
            "original_median_shape_after_transp": [1, 120, 120], "image_reader_writer": "NaturalImage2DIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"2d": config},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 255.0, "mean": 120.0, "median": 118.0, "min": 1.0, "percentile_00_5": 20.0,
                "percentile_99_5": 230.0, "std": 50.0}}}


def _train(network, dataset: Path, plan: dict, configuration: str, steps: int) -> None:
    """A few steps of training on the spec's centre windows (the weights only need to mean something), on the
    network's axes."""
    from edgeseg.data import NnUNetDataset
    from edgeseg.importers.nnunet import _model_axes, _preprocessing

    config = plan["configurations"][configuration]
    axes = _model_axes(plan, len(config["patch_size"]))
    spec = _preprocessing(plan, config, [f"c{i}" for i in range(len(config["normalization_schemes"]))], axes, None,
                          "test")
    data = NnUNetDataset(dataset)
    pairs = [spec.pair(c.image, c.label, c.geometry.spacing) for c in map(data.load, data.split("train"))]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    if axes:
        x, y = x.permute(0, 1, *[2 + a for a in axes]), y.permute(0, *[1 + a for a in axes])
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(x), y)
        loss.backward()
        optimizer.step()
    network.eval()


def write_model(results: Path, dataset: Path, plan: dict | None = None, folds=(0,), steps: int = 40,
                configuration: str = "2d") -> Path:
    """``results/nnUNetTrainer__nnUNetPlans__<configuration>`` with plans.json, dataset.json and the folds."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plan = plan or plans()
    folder = results / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    (folder / "plans.json").write_text(json.dumps(plan, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    config = plan["configurations"][configuration]
    arch = config["architecture"]
    torch.manual_seed(0)
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     len(config["normalization_schemes"]), len(LABELS), deep_supervision=False)
    _train(network, dataset, plan, configuration, steps)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        torch.save(checkpoint(network, optimizer, plan, dataset_json, fold, configuration),
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def checkpoint(network, optimizer, plan: dict, dataset_json: dict, fold, configuration: str = "2d") -> dict:
    """What ``nnUNetTrainer.save_checkpoint`` writes."""
    floats = [np.float64(0.5), np.float64(0.6)]
    return {"network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": floats, "ema_fg_dice": floats, "dice_per_class_or_region": [floats],
                        "train_losses": floats, "val_losses": floats, "lrs": [0.01, 0.009],
                        "epoch_start_timestamps": [1.0, 2.0], "epoch_end_timestamps": [1.5, 2.5]},
            "_best_ema": np.float64(0.6), "current_epoch": 2,
            "init_args": {"plans": plan, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": tuple(range(len(plan["configurations"][configuration]["patch_size"])))}
