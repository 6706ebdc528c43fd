"""Calibration sets: real cases chosen by a recorded strategy, preprocessed exactly as the model expects.

``stratified`` picks samples across foreground-fraction strata (empty, small, medium, large structures), so
that lesion-bearing and empty images both set the INT8 ranges; ``random`` is a plain seeded draw. A 2D model
over volumes samples slices. The set is saved as ``.npz`` (tensors + a JSON manifest; no pickle). The manifest
records each case's content hash, so overlap with evaluated cases is found whatever the folder or case names.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.data.io import atomic_write, read_toml
from edgeseg.data.nnunet import NnUNetDataset, content_overlap
from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.errors import InputError, UsageError
from edgeseg.progress import track
from edgeseg.validation import JSON_ERRORS

FORMAT, VERSION = "edgeseg-calibration", 2  # 2: per-case content hashes (``case_sha256``)
STRATEGIES = ("stratified", "random")
_POOL_PER_SAMPLE = 4  # candidates scanned per requested sample (bounds the read time on large datasets)
BUNDLED_FILE = "calibration.npz"
BUNDLED_MAX_BYTES = 32 * 2**20  # float16 samples carried in a bundle for bench's INT8 baselines (the first that fit)


@dataclass
class CalibrationSet:
    inputs: dict[tuple[int, ...], np.ndarray]  # spatial size → (N, C, *size) float32
    manifest: dict

    @property
    def case_ids(self) -> list[str]:
        return list(self.manifest["cases"])


def _size_key(size: tuple[int, ...]) -> str:
    return "inputs_" + "x".join(map(str, size))


def _units(case, model_dims: int, source: Path) -> list[tuple[int | None, float]]:
    """(slice index or None, foreground fraction) for every sample one case offers (read from ``source``)."""
    label = case.label if case.label is not None else np.zeros(case.image.shape[1:], np.uint8)
    if case.spatial_dims == model_dims:
        return [(None, float((label > 0).mean()))]
    if model_dims == 2 and case.spatial_dims == 3:
        return [(z, float((label[..., z] > 0).mean())) for z in range(label.shape[-1])]
    raise InputError(f"{source}: a {model_dims}D model cannot be calibrated on {case.spatial_dims}D images")


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
                          case_ids: list[str] | None = None, exclude_sha256=frozenset()) -> CalibrationSet:
    """Pick ``size`` samples from ``split`` (or ``case_ids``) minus the cases ``exclude`` names and those whose
    content hash is in ``exclude_sha256`` (e.g. the evaluated cases of another folder), and preprocess them at
    every spatial size in ``sizes`` (default: the preprocessing size)."""
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
    if size < 1:
        raise UsageError("calibration size must be at least 1")
    dataset = NnUNetDataset(data_dir, require_labels=strategy == "stratified")
    if len(dataset.channel_names) != preprocessing.in_channels:
        raise InputError(f"{dataset.root}: {len(dataset.channel_names)} channels, the model expects {preprocessing.in_channels}")
    excluded = set(exclude)
    pool_ids = [c for c in (case_ids if case_ids is not None else dataset.split(split, seed)) if c not in excluded]
    if not pool_ids:
        raise InputError(f"{dataset.root}: no {split} cases left for calibration after excluding the evaluation cases")
    rng = np.random.default_rng(seed)
    scan = _scan_pool(dataset, pool_ids, rng, max(size * _POOL_PER_SAMPLE, 16), set(exclude_sha256))
    if not scan:
        raise InputError(f"{dataset.root}: every {split} case has the content of an evaluated case; "
                           "calibrate on other cases")
    units = []
    for cid in track(scan, "scan calibration pool"):
        units += [(cid, z, frac) for z, frac in _units(dataset.load(cid), model_dims, dataset.cases[cid].image_files[0])]
    chosen = _choose(units, size, strategy, rng)
    sizes = [tuple(s) for s in (sizes or [preprocessing.size])]
    specs = [dataclasses.replace(preprocessing, size=spatial) for spatial in sizes]
    batches: list[list[np.ndarray]] = [[] for _ in sizes]
    for cid in track(sorted({c for c, _, _ in chosen}), "preprocess calibration cases"):
        case = dataset.load(cid)
        image, spacing = case.image, case.geometry.spacing
        volume = None
        for _, z, _ in (u for u in chosen if u[0] == cid):
            if z is not None and volume is None:
                volume = preprocessing.normalize(image)
            for spec, batch in zip(specs, batches):
                batch.append(spec(image, spacing) if z is None else spec.fit(volume[..., z]).astype(np.float32))
    inputs = {spatial: np.stack(batch).astype(np.float32) for spatial, batch in zip(sizes, batches)}
    cases = sorted({c for c, _, _ in chosen})
    manifest = {"format": FORMAT, "version": VERSION, "dataset": dataset.name, "split": split,
                "strategy": strategy, "seed": seed, "size": len(chosen), "sizes": [list(s) for s in sizes],
                "cases": sorted({c for c, _, _ in chosen}),
                "samples": [{"case": c, "slice": z, "foreground_fraction": round(f, 5)} for c, z, f in chosen],
                "excluded_cases": len(excluded), "preprocessing_sha256": preprocessing.sha256(),
                "fingerprint": dataset.fingerprint(cases), "case_sha256": dataset.case_hashes(cases),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return CalibrationSet(inputs, manifest)


def calibration_from_arrays(images, spec, sizes: list[tuple[int, ...]] | None = None, size: int = 64,
                            transform=None) -> CalibrationSet:
    """A calibration set from in-memory images (like ``nncf.Dataset(data, transform)``): the first ``size`` items
    of ``images``, each passed through ``transform`` first when given, then a raw ``(C, *spatial)`` array (or
    ``(*spatial)`` for a 1-channel model) of the model's dimensionality, preprocessed with ``spec`` (a
    :class:`~edgeseg.checkpoint.CheckpointSpec`) at every spatial size of ``sizes`` (default: the model's).

    Each array's content sha256 is recorded (``case_sha256``), so two array sets can be compared; a dataset
    case is hashed from its files' bytes, so overlap with the evaluation cases of a folder cannot be detected:
    keep those cases out of ``images`` yourself."""
    from edgeseg.infer.inputs import as_channel_first, check_dims

    if size < 1:
        raise UsageError("calibration size must be at least 1")
    sizes = [tuple(s) for s in (sizes or [spec.preprocessing.size])]
    specs = [dataclasses.replace(spec.preprocessing, size=spatial) for spatial in sizes]
    batches: list[list[np.ndarray]] = [[] for _ in sizes]
    hashes: dict[str, str] = {}
    for i, item in enumerate(images):
        if i == size:
            break
        source = f"calibration image {i}"
        image = as_channel_first(transform(item) if transform else item, spec.in_channels, spec.spatial_dims, source)
        check_dims(image, spec, spec.spatial_dims, source)
        hashes[f"array_{i:04d}"] = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        for pre, batch in zip(specs, batches):
            batch.append(pre(image))
    if not hashes:
        raise UsageError("the calibration images are empty: pass at least one image")
    cases = list(hashes)
    manifest = {"format": FORMAT, "version": VERSION, "dataset": None, "source": "arrays", "split": None,
                "strategy": "given", "seed": None, "size": len(cases), "sizes": [list(s) for s in sizes],
                "cases": cases, "samples": [{"case": c, "slice": None} for c in cases], "excluded_cases": 0,
                "preprocessing_sha256": spec.preprocessing.sha256(),
                "fingerprint": hashlib.sha256("".join(hashes.values()).encode()).hexdigest(), "case_sha256": hashes,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return CalibrationSet({s: np.stack(b).astype(np.float32) for s, b in zip(sizes, batches)}, manifest)


def _scan_pool(dataset: NnUNetDataset, pool_ids: list[str], rng, n: int, excluded_content: set[str]) -> list[str]:
    """Up to ``n`` seeded candidates from ``pool_ids`` (in dataset order), skipping excluded content."""
    scan = []
    for i in rng.permutation(len(pool_ids)):
        if len(scan) == n:
            break
        if not excluded_content or dataset.case_sha256(pool_ids[i]) not in excluded_content:
            scan.append(int(i))
    return [pool_ids[i] for i in sorted(scan)]


def load_recipe(name_or_path: str | Path) -> dict:
    """A calibration recipe with its dataset resolved to a folder: a ``.toml`` path, or a name looked up in
    ``./calibration`` first, then in the recipes shipped with edgeseg."""
    from edgeseg.data.nnunet import data_root
    from edgeseg.package_data import shipped_folder

    path = Path(name_or_path)
    if path.suffix != ".toml":
        folders = [d for d in (Path.cwd() / "calibration", shipped_folder("calibration")) if d is not None]
        path = next((d / f"{name_or_path}.toml" for d in folders if (d / f"{name_or_path}.toml").is_file()), None)
        if path is None:
            raise InputError(f"calibration recipe {str(name_or_path)!r} not found (looked in {', '.join(map(str, folders))})")
    if not path.is_file():
        raise InputError(f"{path}: calibration recipe not found")
    recipe = read_toml(path)
    unknown = set(recipe) - {"description", "dataset", "split", "size", "strategy", "seed", "sizes"}
    if unknown or "dataset" not in recipe:
        raise InputError(f"{path}: recipe needs 'dataset' and knows only description/dataset/split/size/strategy/seed/sizes"
                           + (f" (unknown: {sorted(unknown)})" if unknown else ""))
    dataset = Path(recipe["dataset"])
    recipe["dataset"] = dataset if dataset.is_dir() else data_root() / dataset
    recipe["sizes"] = [tuple(s) for s in recipe.get("sizes", [])] or None
    return recipe


def save_calibration(path: str | Path, calib: CalibrationSet) -> Path:
    """Write ``calib`` as ``.npz`` (one array per spatial size + the JSON manifest), atomically."""
    arrays = {_size_key(s): a for s, a in calib.inputs.items()}
    arrays["manifest"] = np.array(json.dumps(calib.manifest))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(Path(path), write)
    return Path(path)


def load_calibration(path: str | Path) -> CalibrationSet:
    """Read a calibration set written by :func:`save_calibration` (no pickle)."""
    return _parse_calibration(Path(path), Path(path))


def _parse_calibration(source, where: Path) -> CalibrationSet:
    try:
        with np.load(source, allow_pickle=False) as data:
            manifest = json.loads(str(data["manifest"]))
            inputs = {tuple(s): data[_size_key(tuple(s))].astype(np.float32) for s in manifest["sizes"]}
    except (OSError, KeyError, TypeError, *JSON_ERRORS) as exc:
        raise InputError(f"{where}: not an edgeseg calibration set ({type(exc).__name__}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{where}: not an edgeseg calibration set")
    return CalibrationSet(inputs, manifest)


def bundle_calibration(bundle_dir: Path, manifest: dict, calib: CalibrationSet, size: tuple[int, ...]) -> None:
    """Carry ``calib`` in the bundle for ``bench``'s INT8 baselines, which must calibrate on the bundle's own
    calibration cases whatever data bench is given: at the model ``size``, float16, evenly spaced samples up to
    :data:`BUNDLED_MAX_BYTES`; listed in the manifest's ``extra_files`` (so hashed and verified)."""
    size = tuple(size) if tuple(size) in calib.inputs else next(iter(calib.inputs))
    samples = calib.inputs[size]
    n = int(max(1, min(len(samples), BUNDLED_MAX_BYTES // (samples[0].size * 2))))
    keep = np.unique(np.linspace(0, len(samples) - 1, n).round().astype(int))
    carried = {"file": BUNDLED_FILE, "size": list(size), "dtype": "float16", "samples": keep.tolist(),
               "of": len(samples)}
    save_calibration(Path(bundle_dir) / BUNDLED_FILE,
                     CalibrationSet({size: samples[keep].astype(np.float16)},
                                    {**calib.manifest, "sizes": [list(size)], "bundled": carried}))
    manifest["calibration"] = {**calib.manifest, "bundled": carried}
    manifest["extra_files"] = {**manifest.get("extra_files", {}), "calibration": BUNDLED_FILE}


def read_bundled_calibration(bundle_dir: str | Path, manifest: dict) -> CalibrationSet | None:
    """The calibration set a bundle carries (its bytes checked against the manifest's sha256), or None for a
    bundle made before bundles carried one."""
    rel = (manifest.get("extra_files") or {}).get("calibration")
    if rel is None:
        return None
    from edgeseg.bundle import read_member

    return _parse_calibration(io.BytesIO(read_member(bundle_dir, manifest, rel)), Path(bundle_dir) / rel)


def check_disjoint(calib: CalibrationSet, dataset: NnUNetDataset, case_ids: list[str],
                   what: str = "evaluation") -> None:
    """Refuse a calibration set that shares cases with ``case_ids`` of ``dataset`` (the cases the drift is
    evaluated or tuned on), compared by content: a copy under another folder or case name is the same case.
    A set without content hashes (format version 1) is compared by case id, whatever its folder."""
    recorded = calib.manifest.get("case_sha256")
    if isinstance(recorded, dict):
        shared = content_overlap(dataset.case_hashes(case_ids), recorded)
    else:
        shared = [(c, c) for c in sorted(set(calib.case_ids) & set(case_ids))]
    if shared:
        ours, theirs = shared[0]
        same = "" if ours == theirs else f", the calibration case {theirs}"
        raise InputError(f"calibration set shares {len(shared)} case(s) with the {what} cases (e.g. "
                           f"{dataset.cases[ours].image_files[0]}{same}); calibrate on other cases (the train split) "
                           "so the drift is honest")


def check_preprocessing(calib: CalibrationSet, preprocessing: PreprocessSpec, sizes: list[tuple[int, ...]]) -> None:
    """Refuse a calibration set made with another preprocessing spec or without every deployment size."""
    base = dataclasses.replace(preprocessing, size=tuple(calib.manifest["sizes"][0])) if calib.manifest["sizes"] else preprocessing
    if calib.manifest.get("preprocessing_sha256") not in (preprocessing.sha256(), base.sha256()):
        raise InputError("calibration set was made with a different preprocessing spec than this checkpoint's; "
                           "rebuild it with `edgeseg calibrate DATA --checkpoint CKPT`")
    missing = [s for s in sizes if tuple(s) not in calib.inputs]
    if missing:
        raise InputError(f"calibration set has no inputs at size {'x'.join(map(str, missing[0]))}; the target "
                           f"profile deploys at {', '.join('x'.join(map(str, s)) for s in sizes)}")
