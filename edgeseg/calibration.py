"""Calibration sets: real cases chosen by a recorded strategy, preprocessed exactly as the model expects.

``stratified`` picks samples across foreground-fraction strata (empty, small, medium, large structures), so
that lesion-bearing and empty images both set the INT8 ranges; ``random`` is a plain seeded draw. A 2D model
over volumes samples slices. The set is saved as ``.npz`` (tensors + a JSON manifest; no pickle).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.io import atomic_write, read_toml
from .data.nnunet import NnUNetDataset
from .data.preprocessing import PreprocessSpec
from .errors import EdgesegError
from .progress import track

FORMAT, VERSION = "edgeseg-calibration", 1
STRATEGIES = ("stratified", "random")
_POOL_PER_SAMPLE = 4  # candidates scanned per requested sample (bounds the read time on large datasets)


@dataclass
class CalibrationSet:
    inputs: dict[tuple[int, ...], np.ndarray]  # spatial size → (N, C, *size) float32
    manifest: dict

    @property
    def case_ids(self) -> list[str]:
        return list(self.manifest["cases"])


def _size_key(size: tuple[int, ...]) -> str:
    return "inputs_" + "x".join(map(str, size))


def _units(case, model_dims: int) -> list[tuple[int | None, float]]:
    """(slice index or None, foreground fraction) for every sample one case offers."""
    label = case.label if case.label is not None else np.zeros(case.image.shape[1:], np.uint8)
    if case.spatial_dims == model_dims:
        return [(None, float((label > 0).mean()))]
    if model_dims == 2 and case.spatial_dims == 3:
        return [(z, float((label[..., z] > 0).mean())) for z in range(label.shape[-1])]
    raise EdgesegError(f"a {model_dims}D model cannot be calibrated on {case.spatial_dims}D images")


def _choose(units: list[tuple], size: int, strategy: str, rng: np.random.Generator) -> list[tuple]:
    """``units`` are (case, slice, fraction); stratified = equal share per non-empty tertile + empty ones."""
    if len(units) <= size:
        return units
    if strategy == "random":
        return [units[i] for i in sorted(rng.choice(len(units), size, replace=False))]
    empty = [u for u in units if u[2] == 0]
    full = sorted((u for u in units if u[2] > 0), key=lambda u: u[2])
    strata = [s for s in [empty, *np.array_split(np.arange(len(full)), 3)] if len(s)]
    strata = [s if s is empty else [full[i] for i in s] for s in strata]
    picked: list[tuple] = []
    pools = [list(rng.permutation(len(s))) for s in strata]
    while len(picked) < size:  # round robin over strata, so each gets an equal share while it lasts
        for stratum, pool in zip(strata, pools):
            if pool and len(picked) < size:
                picked.append(stratum[pool.pop()])
    return sorted(picked, key=lambda u: (u[0], -1 if u[1] is None else u[1]))


def build_calibration_set(data_dir: str | Path, preprocessing: PreprocessSpec, model_dims: int, size: int = 64,
                          strategy: str = "stratified", seed: int = 0, split: str = "train",
                          exclude: list[str] = (), sizes: list[tuple[int, ...]] | None = None,
                          case_ids: list[str] | None = None) -> CalibrationSet:
    """Pick ``size`` samples from ``split`` (or ``case_ids``) minus ``exclude`` and preprocess them at
    every spatial size in ``sizes`` (default: the preprocessing size)."""
    if strategy not in STRATEGIES:
        raise EdgesegError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
    if size < 1:
        raise EdgesegError("calibration size must be at least 1")
    dataset = NnUNetDataset(data_dir, require_labels=strategy == "stratified")
    if len(dataset.channel_names) != preprocessing.in_channels:
        raise EdgesegError(f"{dataset.root}: {len(dataset.channel_names)} channels, the model expects {preprocessing.in_channels}")
    excluded = set(exclude)
    pool_ids = [c for c in (case_ids if case_ids is not None else dataset.split(split, seed)) if c not in excluded]
    if not pool_ids:
        raise EdgesegError(f"{dataset.root}: no {split} cases left for calibration after excluding the evaluation cases")
    rng = np.random.default_rng(seed)
    scan = [pool_ids[i] for i in sorted(rng.permutation(len(pool_ids))[: max(size * _POOL_PER_SAMPLE, 16)])]
    units = []
    for cid in track(scan, "scan calibration pool"):
        units += [(cid, z, frac) for z, frac in _units(dataset.load(cid), model_dims)]
    chosen = _choose(units, size, strategy, rng)
    sizes = [tuple(s) for s in (sizes or [preprocessing.size])]
    specs = [dataclasses.replace(preprocessing, size=spatial) for spatial in sizes]
    batches: list[list[np.ndarray]] = [[] for _ in sizes]
    for cid in track(sorted({c for c, _, _ in chosen}), "preprocess calibration cases"):
        image = dataset.load(cid).image
        volume = None
        for _, z, _ in (u for u in chosen if u[0] == cid):
            if z is not None and volume is None:
                volume = preprocessing.normalize(image)
            for spec, batch in zip(specs, batches):
                batch.append(spec(image) if z is None else spec.fit(volume[..., z]).astype(np.float32))
    inputs = {spatial: np.stack(batch).astype(np.float32) for spatial, batch in zip(sizes, batches)}
    manifest = {"format": FORMAT, "version": VERSION, "dataset": dataset.name, "split": split,
                "strategy": strategy, "seed": seed, "size": len(chosen), "sizes": [list(s) for s in sizes],
                "cases": sorted({c for c, _, _ in chosen}),
                "samples": [{"case": c, "slice": z, "foreground_fraction": round(f, 5)} for c, z, f in chosen],
                "excluded_cases": len(excluded), "preprocessing_sha256": preprocessing.sha256(),
                "fingerprint": dataset.fingerprint(sorted({c for c, _, _ in chosen})),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return CalibrationSet(inputs, manifest)


def load_recipe(name_or_path: str | Path) -> dict:
    """A calibration recipe (``calibration/NAME.toml``) with its dataset resolved to a folder."""
    from .data.nnunet import data_root

    path = Path(name_or_path)
    if path.suffix != ".toml":
        folders = [Path.cwd() / "calibration", Path(__file__).resolve().parents[1] / "calibration"]
        path = next((d / f"{name_or_path}.toml" for d in folders if (d / f"{name_or_path}.toml").is_file()), path)
    if not path.is_file():
        raise EdgesegError(f"calibration recipe {str(name_or_path)!r} not found (looked in ./calibration and the repository's calibration/)")
    recipe = read_toml(path)
    unknown = set(recipe) - {"description", "dataset", "split", "size", "strategy", "seed", "sizes"}
    if unknown or "dataset" not in recipe:
        raise EdgesegError(f"{path}: recipe needs 'dataset' and knows only description/dataset/split/size/strategy/seed/sizes"
                           + (f" (unknown: {sorted(unknown)})" if unknown else ""))
    dataset = Path(recipe["dataset"])
    recipe["dataset"] = dataset if dataset.is_dir() else data_root() / dataset
    recipe["sizes"] = [tuple(s) for s in recipe.get("sizes", [])] or None
    return recipe


def save_calibration(path: str | Path, calib: CalibrationSet) -> Path:
    arrays = {_size_key(s): a for s, a in calib.inputs.items()}
    arrays["manifest"] = np.array(json.dumps(calib.manifest))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(Path(path), write)
    return Path(path)


def load_calibration(path: str | Path) -> CalibrationSet:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            manifest = json.loads(str(data["manifest"]))
            inputs = {tuple(s): data[_size_key(tuple(s))].astype(np.float32) for s in manifest["sizes"]}
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise EdgesegError(f"{path}: not an edgeseg calibration set ({type(exc).__name__}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise EdgesegError(f"{path}: not an edgeseg calibration set")
    return CalibrationSet(inputs, manifest)


def check_disjoint(calib: CalibrationSet, eval_ids: list[str], dataset_name: str | None = None) -> None:
    """Refuse a calibration set that shares cases with the cases the drift is evaluated on."""
    if dataset_name and calib.manifest.get("dataset") != dataset_name:
        return
    shared = sorted(set(calib.case_ids) & set(eval_ids))
    if shared:
        raise EdgesegError(f"calibration set shares {len(shared)} case(s) with the evaluation cases "
                           f"(e.g. {shared[0]}); calibrate on other cases (the train split) so the drift is honest")


def check_preprocessing(calib: CalibrationSet, preprocessing: PreprocessSpec, sizes: list[tuple[int, ...]]) -> None:
    """Refuse a calibration set made with another preprocessing spec or without every deployment size."""
    base = dataclasses.replace(preprocessing, size=tuple(calib.manifest["sizes"][0])) if calib.manifest["sizes"] else preprocessing
    if calib.manifest.get("preprocessing_sha256") not in (preprocessing.sha256(), base.sha256()):
        raise EdgesegError("calibration set was made with a different preprocessing spec than this checkpoint's; "
                           "rebuild it with `edgeseg calibrate DATA --checkpoint CKPT`")
    missing = [s for s in sizes if tuple(s) not in calib.inputs]
    if missing:
        raise EdgesegError(f"calibration set has no inputs at size {'x'.join(map(str, missing[0]))}; the target "
                           f"profile deploys at {', '.join('x'.join(map(str, s)) for s in sizes)}")
