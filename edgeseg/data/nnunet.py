"""Datasets in the nnU-Net v2 raw layout: ``dataset.json``, ``imagesTr/CASE_XXXX.ext``, ``labelsTr/CASE.ext``
(test cases: ``imagesTs``/``labelsTs``)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.data.io import Geometry, file_extension, read_array, read_label
from edgeseg.errors import EdgesegError
from edgeseg.validation import JSON_ERRORS

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_FILE_DIGESTS: dict[tuple[str, int, int], bytes] = {}  # (path, size, mtime) → sha256: each file hashed once


def file_digest(path: Path) -> bytes:
    """sha256 of a file's bytes, remembered while the file keeps its size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = hashlib.sha256(path.read_bytes()).digest()
    return _FILE_DIGESTS[key]


def content_overlap(a: dict[str, str], b: dict[str, str]) -> list[tuple[str, str]]:
    """``(case in a, case in b)`` pairs whose content hashes (``{case: sha256}``) are equal, whatever their names."""
    by_hash = {h: cid for cid, h in b.items()}
    return sorted((cid, by_hash[h]) for cid, h in a.items() if h in by_hash)


def data_root() -> Path:
    """Where the shared real datasets live: ``$EDGESEG_DATA``, else ``../shared/datasets`` beside the checkout."""
    if os.environ.get("EDGESEG_DATA"):
        return Path(os.environ["EDGESEG_DATA"])
    beside_checkout = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    return beside_checkout if beside_checkout.is_dir() else Path.cwd().parent / "shared" / "datasets"


@dataclass
class Case:
    """One case on disk: its channel files (in channel order) and its label file, if any."""

    case_id: str
    image_files: list[Path]
    label_file: Path | None


@dataclass
class CaseData:
    """One loaded case: ``image`` is ``(channels, *spatial)`` float32, ``label`` is ``(*spatial)`` int64."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry

    @property
    def spatial_dims(self) -> int:
        return self.image.ndim - 1


class NnUNetDataset:
    """Index of a dataset folder; cases load lazily and every problem names the file it concerns.

    ``test=True`` indexes nnU-Net's test cases (``imagesTs``, labels in ``labelsTs`` optional) instead of the
    training cases; its only split is ``test``."""

    def __init__(self, root: str | Path, require_labels: bool = True, test: bool = False):
        self.root, self.test = Path(root), test
        meta_file = self.root / "dataset.json"
        if not meta_file.is_file():
            raise EdgesegError(f"{self.root}: not an nnU-Net dataset (no dataset.json)")
        try:
            self.meta = json.loads(meta_file.read_text())
            self.channel_names = [self.meta["channel_names"][k] for k in sorted(self.meta["channel_names"], key=int)]
            self.labels: dict[str, int] = {str(k): int(v) for k, v in self.meta["labels"].items()}
        except (KeyError, TypeError, AttributeError, *JSON_ERRORS) as exc:
            raise EdgesegError(f"{meta_file}: invalid dataset.json ({type(exc).__name__}: {exc})") from None
        self.name = self.root.name
        self.images_dir, self.labels_dir = (self.root / f"imagesT{'s' if test else 'r'}",
                                            self.root / f"labelsT{'s' if test else 'r'}")
        self.cases = self._index(require_labels)
        self._case_sha256: dict[str, str] = {}  # case → case_sha256: each case's images hashed once per dataset
        if not self.cases:
            raise EdgesegError(f"{self.images_dir}: no images found")

    @property
    def num_classes(self) -> int:
        return max(self.labels.values()) + 1

    @property
    def label_names(self) -> list[str]:
        by_value = {v: k for k, v in self.labels.items()}
        return [by_value.get(i, f"label{i}") for i in range(self.num_classes)]

    def _index(self, require_labels: bool) -> dict[str, Case]:
        images_dir, labels_dir = self.images_dir, self.labels_dir
        if not images_dir.is_dir():
            hint = "; test cases in imagesTs are read with --split test" if (self.root / "imagesTs").is_dir() else ""
            raise EdgesegError(f"{images_dir}: missing images folder{hint}")
        grouped: dict[str, dict[int, Path]] = {}
        for f in sorted(images_dir.iterdir()):
            if f.name.startswith("."):
                continue
            stem = f.name[: -len(file_extension(f))]
            m = _CHANNEL_FILE.match(stem)
            if not m:
                raise EdgesegError(f"{f}: image name must end in _XXXX (channel index), e.g. case_0000.png")
            grouped.setdefault(m["case"], {})[int(m["channel"])] = f
        labels = {}
        if labels_dir.is_dir():
            labels = {f.name[: -len(file_extension(f))]: f for f in labels_dir.iterdir() if not f.name.startswith(".")}
        cases = {}
        for case_id, channels in grouped.items():
            if sorted(channels) != list(range(len(channels))):
                raise EdgesegError(f"{images_dir}: case {case_id} has channel files {sorted(channels)}, expected 0..{len(channels) - 1}")
            label = labels.get(case_id)
            if label is None and require_labels:
                raise EdgesegError(f"{labels_dir / (case_id + self.meta.get('file_ending', '.png'))}: missing label for case {case_id}")
            cases[case_id] = Case(case_id, [channels[i] for i in range(len(channels))], label)
        return cases

    def split(self, name: str | None, seed: int = 0, val_fraction: float = 0.2) -> list[str]:
        """Case ids of ``train``/``val`` from ``splits.json`` (nnU-Net's fold list: fold 0), else a seeded split.

        ``name=None`` or ``"all"`` returns every case; ``"test"`` every case of a test-layout dataset.
        """
        ids = sorted(self.cases)
        if name in (None, "all") or (name == "test" and self.test):
            return ids
        if name not in ("train", "val", "test"):
            raise EdgesegError(f"unknown split {name!r}: use train, val, all or test")
        if self.test:
            raise EdgesegError(f"{self.images_dir}: holds test cases only, no {name!r} split; use --split test")
        if name == "test":
            raise EdgesegError(f"{self.images_dir}: holds training cases; the test split is read from imagesTs")
        split_file = self.root / "splits.json"
        if split_file.is_file():
            fold = self._read_splits(split_file, name)
            missing = [c for c in fold if c not in self.cases]
            if missing:
                raise EdgesegError(f"{split_file}: {len(missing)} {name} cases not in imagesTr, e.g. {missing[0]}")
            return fold
        order = np.random.default_rng(seed).permutation(len(ids))
        n_val = max(1, int(round(len(ids) * val_fraction))) if len(ids) > 1 else 0
        chosen = sorted(ids[i] for i in order[:n_val]) if name == "val" else sorted(ids[i] for i in order[n_val:])
        return chosen

    @staticmethod
    def _read_splits(split_file: Path, name: str) -> list[str]:
        """The ``name`` case list of ``splits.json`` (an object, or nnU-Net's list of folds: fold 0)."""
        try:
            splits = json.loads(split_file.read_text())
        except (OSError, *JSON_ERRORS) as exc:
            raise EdgesegError(f"{split_file}: unreadable JSON ({exc})") from None
        if isinstance(splits, list):
            if not splits or not isinstance(splits[0], dict):
                raise EdgesegError(f"{split_file}: fold 0 must be an object with train and val case lists")
            splits = splits[0]
        if not isinstance(splits, dict) or name not in splits:
            raise EdgesegError(f"{split_file}: no {name!r} case list (expected {{\"train\": [...], \"val\": [...]}})")
        fold = splits[name]
        if not isinstance(fold, list) or not all(isinstance(c, str) for c in fold):
            raise EdgesegError(f"{split_file}: field {name!r} must be a list of case ids, got {json.dumps(fold)[:60]}")
        return fold

    def load_image(self, case_id: str, as_stored: bool = False) -> tuple[np.ndarray, Geometry]:
        """A case's channels as ``(channels, *spatial)`` float32 (``as_stored``: in the files' own data type) and
        their geometry (no label read)."""
        case = self.cases[case_id]
        parts, geometry = [], None
        for f in case.image_files:
            arr, geo = read_array(f)
            if parts and arr.shape[1:] != parts[0].shape[1:]:
                raise EdgesegError(f"{f}: size {arr.shape[1:]} differs from channel 0 {parts[0].shape[1:]}")
            parts.append(arr)
            geometry = geometry or geo
        image = np.concatenate(parts, axis=0)
        image = image if as_stored else image.astype(np.float32)
        if image.shape[0] != len(self.channel_names):
            raise EdgesegError(f"{case.image_files[0]}: case {case_id} has {image.shape[0]} channels, "
                               f"dataset.json names {len(self.channel_names)} ({', '.join(self.channel_names)})")
        return image, geometry

    def load(self, case_id: str) -> CaseData:
        """Read a case's channels and label, checking channel count, sizes and label values."""
        case = self.cases[case_id]
        image, geometry = self.load_image(case_id)
        label = None
        if case.label_file is not None:
            label, _ = read_label(case.label_file)
            if label.shape != image.shape[1:]:
                raise EdgesegError(f"{case.label_file}: label size {label.shape} != image size {image.shape[1:]}")
            bad = np.setdiff1d(np.unique(label), list(self.labels.values()))
            if bad.size:
                raise EdgesegError(f"{case.label_file}: unexpected label values {bad.tolist()} "
                                   f"(dataset.json allows {sorted(self.labels.values())})")
        return CaseData(case_id, image, label, geometry)

    def _files(self, case_id: str, labels: bool = True) -> list[Path]:
        case = self.cases[case_id]
        return [*case.image_files, *([case.label_file] if labels and case.label_file else [])]

    def fingerprint(self, case_ids: list[str]) -> str:
        """sha256 over the names and bytes of every file of these cases (detects any change to the data)."""
        h = hashlib.sha256()
        for cid in sorted(case_ids):
            for f in self._files(cid):
                h.update(f.name.encode())
                h.update(file_digest(f))
        return h.hexdigest()

    def case_sha256(self, case_id: str) -> str:
        """What a case's images hold: sha256 over its channel files' bytes in channel order, independent of the
        folder, the file names and the label (the same images under another name are the same case). Computed once
        per case and dataset (compress and tuning both leave the held-back images out by it)."""
        if case_id not in self._case_sha256:
            h = hashlib.sha256()
            for f in self._files(case_id, labels=False):
                h.update(file_digest(f))
            self._case_sha256[case_id] = h.hexdigest()
        return self._case_sha256[case_id]

    def case_hashes(self, case_ids: list[str]) -> dict[str, str]:
        """``{case: case_sha256}`` for these cases."""
        return {cid: self.case_sha256(cid) for cid in case_ids}
