"""Structured channel pruning with torch-pruning (DepGraph), and the recovery that keeps the model healthy.

    model, spec = load_checkpoint(path)
    macs, params = count_macs(model, (1, 1, 256, 256))
    batches = calibration_batches(spec, data_dir)             # a few dozen training images
    report = prune_model(model, (1, 1, 256, 256), ratio=0.5, calib_batches=batches)
    finetune(model, spec, data_dir, epochs=12)                # optional recovery: the training loop
    save_checkpoint(out, model, spec)                          # the pruned widths go into the spec

Without ``calib_batches`` (or :func:`recalibrate_batchnorm` afterwards) a pruned model keeps BatchNorm
statistics measured on the full-width network: the variance reaching every BatchNorm shrinks, the
shrinkage compounds layer after layer, and the model predicts background only (Dice 0).
"""
from edgeseg.pruning.core import PruneReport, count_macs, layer_widths, prune_model
from edgeseg.pruning.recovery import calibration_batches, recalibrate_batchnorm
from edgeseg.training.trainer import finetune

__all__ = ["PruneReport", "calibration_batches", "count_macs", "finetune", "layer_widths", "prune_model",
           "recalibrate_batchnorm"]
