"""Target profiles: one TOML file per deployment target, shipped from the top-level ``export/`` folder.

A profile names the runtime, the precision, the device, the thread count, the input shapes (batch and
spatial ranges, used for calibration, engine optimisation profiles and latency) and runtime options.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeseg.data.io import read_toml
from edgeseg.errors import EdgesegError
from edgeseg.package_data import shipped_folder
from edgeseg.targets.registry import find_target

PRECISIONS = ("int8", "fp16", "fp32")


@dataclass
class TargetProfile:
    name: str
    target: str                               # runtime module: onnxruntime | openvino | tensorrt | torch
    precision: str                            # int8 | fp16 | fp32
    description: str = ""
    device: str = "cpu"                       # cpu | cuda | jetson
    threads: int | None = 2                   # None: the runtime's default
    batch: tuple[int, int, int] = (1, 1, 8)   # min, opt, max
    spatial: list[tuple[int, ...]] = field(default_factory=list)  # empty: the model's training size only
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise EdgesegError(f"profile {self.name}: precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.batch = tuple(int(b) for b in self.batch)
        if len(self.batch) != 3 or not 1 <= self.batch[0] <= self.batch[1] <= self.batch[2]:
            raise EdgesegError(f"profile {self.name}: batch must be [min, opt, max] with 1 <= min <= opt <= max")
        self.spatial = [tuple(int(v) for v in s) for s in self.spatial]

    def spatial_sizes(self, model_size: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Sizes to calibrate and optimise for: the profile's, else the model's; the first is OPT."""
        return self.spatial or [tuple(model_size)]

    def to_dict(self) -> dict:
        return asdict(self)


def profile_dirs() -> list[Path]:
    """Where profiles are looked up, the first folder holding a name wins: ``$EDGESEG_PROFILES``, ``./export``,
    then the profiles shipped with edgeseg."""
    dirs = [Path(p) for p in os.environ.get("EDGESEG_PROFILES", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "export", shipped_folder("export")]
    dirs = [d for d in dirs if d is not None and d.is_dir()]
    return [d for i, d in enumerate(dirs) if d.resolve() not in {p.resolve() for p in dirs[:i]}]


def list_profiles() -> dict[str, Path]:
    """Profile name → file over :func:`profile_dirs`; finding none at all is an error (a broken install)."""
    found: dict[str, Path] = {}
    for d in reversed(profile_dirs()):  # earlier folders win
        found.update({f.stem: f for f in sorted(d.glob("*.toml"))})
    if not found:
        searched = ", ".join(map(str, profile_dirs())) or "none exists"
        raise EdgesegError(f"no target profiles found (folders searched: {searched}): this install lacks the ones "
                           "edgeseg ships; reinstall edgeseg, or set EDGESEG_PROFILES to a folder of profile .toml files")
    return dict(sorted(found.items()))


def load_profile(name_or_path: str | Path) -> TargetProfile:
    """A profile by name (``x86-avx512-openvino-int8``) or by path to a ``.toml`` file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        available = list_profiles()
        if str(name_or_path) not in available:
            raise EdgesegError(f"unknown target profile {str(name_or_path)!r}; available: {', '.join(available)} "
                               f"(searched {', '.join(map(str, profile_dirs()))})")
        path = available[str(name_or_path)]
    if not path.is_file():
        raise EdgesegError(f"{path}: target profile not found")
    raw = read_toml(path)
    raw.setdefault("name", path.stem)
    shapes = raw.pop("shapes", {})
    known = set(TargetProfile.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise EdgesegError(f"{path}: unknown profile keys {unknown}")
    for key in ("target", "precision"):
        if key not in raw:
            raise EdgesegError(f"{path}: profile needs '{key}'")
    if not isinstance(raw.get("options", {}), dict):
        raise EdgesegError(f"{path}: [options] must be a table")
    target = find_target(str(raw["target"]))  # an unknown target is refused where the profile is used
    if target is not None:
        target.check_options(raw.get("options", {}), f"{path}")
    return TargetProfile(**raw, batch=shapes.get("batch", (1, 1, 8)), spatial=shapes.get("spatial", []))
