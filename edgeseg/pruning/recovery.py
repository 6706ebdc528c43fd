"""Getting a pruned model healthy again: calibration batches and BatchNorm re-estimation.

The fine-tune itself is :func:`edgeseg.training.trainer.finetune` (the training loop of ``edgeseg train``).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn


def calibration_batches(spec, data_dir, num_images: int = 32, batch_size: int = 8, split: str = "train",
                        seed: int = 0) -> list[torch.Tensor]:
    """Up to ``num_images`` preprocessed, un-augmented inputs of ``split``, as ``(B, C, *size)`` batches.

    Volumes given to a 2D model contribute their non-blank slices, subsampled evenly.
    """
    from edgeseg.data.nnunet import NnUNetDataset
    from edgeseg.training.trainer import build_samples

    dataset = NnUNetDataset(data_dir)
    ids = dataset.split(split, spec.training.get("seed", 0))
    order = np.random.default_rng(seed).permutation(ids).tolist()

    def load(cids):
        return build_samples(dataset, cids, spec.preprocessing, spec.spatial_dims, "calibration")[0]

    first = load(order[:1])  # a volume seen by a 2D model gives many slices: load only as many cases as needed
    rest = order[1 : math.ceil(num_images / len(first))]
    x = np.concatenate([first, load(rest)]) if rest else first
    if len(x) > num_images:
        x = x[np.linspace(0, len(x) - 1, num_images).round().astype(int)]
    return [torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size])) for s in range(0, len(x), batch_size)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> int:
    """Re-estimate every BatchNorm's running mean/variance on ``batches`` (exact averages, not momentum).

    Pruning removes channels whose (non-zero) means the next BatchNorms had learned to subtract; their
    stale statistics shift every later activation. Returns the number of BatchNorm layers updated.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    with evaluation_mode(model):
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            m.train()
        try:
            forward_all(model, batches)
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
    return len(norms)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module):
    """``model.eval()`` for the block, then the training flag as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def forward_all(model: nn.Module, batches) -> None:
    device = next(model.parameters()).device
    for batch in batches:
        model(batch.to(device))
