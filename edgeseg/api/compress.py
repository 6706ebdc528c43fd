"""``edgeseg.compress``: a checkpoint or a loaded model → prune → calibrate → INT8 per target → a verified bundle."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeseg.api.bundle import Bundle, load_bundle
from edgeseg.api.options import check_options, checkpoint_file, dice_limits, names
from edgeseg.errors import Incomplete, UsageError
from edgeseg.targets.registry import default_targets
from edgeseg.validation import paths_as_path

DEFAULT_TARGETS = tuple(default_targets())  # the registry's: onnxruntime, openvino, tensorrt
# CompressConfig fields that are named parameters of compress() (or filled in by it)
_NAMED = {"checkpoint", "out", "precision", "targets", "calib", "prune", "eval_data", "accuracy_aware"}


def _tuning_fields() -> set[str]:
    from edgeseg.tuning.accuracy_aware import AccuracyAwareSettings

    return {f.name for f in dataclasses.fields(AccuracyAwareSettings)} - {"limits"}


def compress_options() -> list[str]:
    """The keyword options of :func:`compress` beyond its named parameters: the fields of
    :class:`edgeseg.compression.pipeline.CompressConfig` and the accuracy-aware search's settings."""
    from edgeseg.compression.pipeline import CompressConfig

    return sorted((set(CompressConfig.__dataclass_fields__) - _NAMED) | _tuning_fields())


def compress(model, *, calibration: str | os.PathLike | Iterable | None = None,
             targets: str | Iterable[str] = DEFAULT_TARGETS, precision: str = "int8", prune: float | None = None,
             max_dice_drop: float | str | dict | None = None, eval_data: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, spec=None, transform: Callable | None = None,
             **options: Any) -> Bundle:
    """Compress ``model`` into a verified bundle at ``out`` and return it (``edgeseg compress`` from Python).

    ``model``: a checkpoint path, or a loaded edgeseg model with ``spec=`` (or the ``(model, spec)`` pair of
    ``edgeseg.checkpoint.load_checkpoint``). ``calibration``: a dataset folder, a ``.npz`` of ``edgeseg.calibrate``,
    a :class:`~edgeseg.CalibrationSet`, or an iterable of raw images (``transform`` applied to each first, as
    ``nncf.Dataset(data, transform)``); see :func:`edgeseg.calibration.calibration_from_arrays` for what cannot be
    checked then. ``max_dice_drop``: accuracy-aware INT8 (points, ``"lung=0.3,nodule=1"`` or a dict).
    ``out`` defaults to ``<checkpoint stem>.bundle`` in the current folder. Other keyword options: see
    :func:`compress_options`; an unknown one, or a limit a target cannot meet (unless ``allow_miss=True``; the
    bundle is written), raises :class:`EdgesegError`."""
    from edgeseg.compression.pipeline import CompressConfig
    from edgeseg.compression.pipeline import compress as run_compress
    from edgeseg.housekeeping import work_dir

    check_options(options, compress_options(), "compress()")
    tuning = {k: options.pop(k) for k in list(options) if k in _tuning_fields()}
    with work_dir("edgeseg-api") as work:
        checkpoint = checkpoint_file(model, spec, work)
        cfg = CompressConfig(checkpoint=checkpoint, out=out or Path(f"{checkpoint.stem}.bundle"),
                             precision=precision, targets=names(targets), prune=prune, eval_data=eval_data,
                             accuracy_aware=_accuracy_aware(max_dice_drop, tuning, precision), **options)
        cfg.profiles = names(cfg.profiles)
        cfg.calib = _calibration_file(calibration, transform, cfg, work)
        manifest = run_compress(cfg)
    if cfg.accuracy_aware is not None and not cfg.accuracy_aware.allow_miss:
        from edgeseg.tuning.accuracy_aware import missed_targets

        if missed := missed_targets(manifest):
            raise Incomplete(f"the Dice limits could not be met for {', '.join(missed)} within the budget; the "
                               f"best plan found is in {cfg.out} (allow_miss=True accepts it)")
    return load_bundle(cfg.out)


def _accuracy_aware(max_dice_drop, tuning: dict, precision: str):
    """The accuracy-aware search's settings, as ``compress --max-dice-drop`` builds them; None without limits."""
    if max_dice_drop is None:
        if tuning:
            raise UsageError(f"{', '.join(sorted(tuning))}: options of the accuracy-aware search; pass max_dice_drop")
        return None
    if precision != "int8":
        raise UsageError("max_dice_drop tunes INT8 artifacts; use it with precision='int8'")
    from edgeseg.tuning.accuracy_aware import AccuracyAwareSettings

    settings = AccuracyAwareSettings(dice_limits(max_dice_drop), **tuning)
    paths_as_path(settings)
    return settings


def _calibration_file(calibration, transform, cfg, work: Path) -> Path | None:
    """What ``CompressConfig.calib`` takes: a dataset folder or a ``.npz`` (a set or images saved into ``work``)."""
    from edgeseg.calibration import CalibrationSet, calibration_from_arrays, save_calibration

    given_as_files = calibration is None or isinstance(calibration, (str, os.PathLike, CalibrationSet))
    if transform is not None and given_as_files:
        raise UsageError("transform= applies to calibration images given as an iterable of arrays")
    if calibration is None:
        if cfg.precision == "int8" and not cfg.calib_from_checkpoint:
            raise UsageError("INT8 needs calibration data: pass calibration= a dataset folder, an edgeseg.calibrate "
                               ".npz, a CalibrationSet or an iterable of images (or calib_from_checkpoint=True); "
                               "edgeseg never calibrates on random data")
        return None
    if isinstance(calibration, (str, os.PathLike)):
        return Path(calibration)
    if not isinstance(calibration, (CalibrationSet, Iterable)):
        raise UsageError(f"calibration: expected a folder, a .npz, a CalibrationSet or an iterable of images, got "
                           f"{type(calibration).__name__}")
    if not isinstance(calibration, CalibrationSet):
        from edgeseg.checkpoint import read_spec
        from edgeseg.compression.pipeline import deployment_sizes, resolve_profiles

        spec = read_spec(cfg.checkpoint)
        sizes = deployment_sizes(resolve_profiles(cfg), spec.preprocessing.size)
        calibration = calibration_from_arrays(calibration, spec, sizes, cfg.calib_size, transform)
    return save_calibration(work / "calibration.npz", calibration)
