"""The one form of a built artifact in the code: :class:`Artifact` (the bundle manifest's entry, parsed)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from edgeseg.errors import EdgesegError


@dataclass
class Artifact:
    """One built artifact, as recorded in the bundle manifest (paths relative to the bundle).

    Everything past the manifest reader handles artifacts as this class, never as manifest dicts. ``root`` and
    ``prepared`` are facts of this process, never written to a manifest: the folder the files are in when it is
    not the bundle (a checkpoint outside it, bench's workload), and files a target made on this device outside
    the bundle (role → path; e.g. a TensorRT engine in an engine cache)."""

    name: str
    runtime: str
    precision: str
    files: dict[str, str]              # role → relative path, e.g. {"model": "x.xml", "weights": "x.bin"}
    profile: str
    device: str = "cpu"
    float_nodes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # quantizer settings, build commands, notes
    recorded: dict = field(default_factory=dict)  # what compress added: hashes, accuracy, latency, size_bytes, …
    root: Path | None = field(default=None, compare=False)
    prepared: dict[str, Path] = field(default_factory=dict, compare=False)

    _LOCAL = ("recorded", "root", "prepared")

    def model_files(self) -> dict[str, str]:
        """The files of the logits model (role → path): its size is the artifact's size; the end-to-end graph
        beside it (roles ``end_to_end*``, :mod:`edgeseg.targets.pre_post`) is the same model again, with its
        pre- and post-processing."""
        return {role: rel for role, rel in self.files.items() if not role.startswith("end_to_end")}

    @property
    def hashes(self) -> dict:
        """role → ``{"path", "sha256", "bytes"}`` of each file, as the manifest lists them (empty before hashing)."""
        return self.recorded.get("hashes") or {}

    def folder(self, bundle_dir: Path) -> Path:
        """Where the artifact's files are: its own ``root``, else the bundle."""
        return Path(self.root) if self.root is not None else Path(bundle_dir)

    def to_dict(self) -> dict:
        """The manifest form: the build's fields, then what was recorded beside them."""
        core = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._LOCAL}
        return {**core, **self.recorded}

    @classmethod
    def from_dict(cls, data: dict, root: str | Path | None = None) -> Artifact:
        """The artifact of a manifest entry (``to_dict`` of the result gives ``data`` back); ``root`` where its
        files are when not in the bundle."""
        if not isinstance(data, dict):
            raise EdgesegError(f"an artifact must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in fields(cls) if f.name not in cls._LOCAL]
        missing = [k for k in ("name", "runtime", "precision", "files", "profile") if k not in data]
        if missing:
            raise EdgesegError(f"artifact {data.get('name', '?')!r}: missing {', '.join(missing)}")
        return cls(**{k: data[k] for k in names if k in data},
                   recorded={k: v for k, v in data.items() if k not in names},
                   root=Path(root) if root is not None else None)
