"""What `edgeseg infer` wrote into an output folder, and how a killed run is resumed.

``edgeseg-outputs.jsonl`` (the ledger) lists every file edgeseg wrote there, one JSON line each after a header
line: file name, sha256, the input it came from (path and a size/mtime/ctime/inode stamp), the bundle (path,
manifest digest) and artifact. ``--force`` replaces only files listed there and unchanged since. One run writes
into a folder at a time (:func:`output_lock`).

A case is written in three steps, so that a kill at any point leaves a state the next run understands:
1. a sidecar ``.edgeseg-cases/<case>.json`` says "writing" and names the case's files;
2. the files are written, each to a temporary name whose sha256 goes into the sidecar before it is renamed into
   place: a file there with exactly those bytes is edgeseg's (a later ``--resume`` may replace it, a run
   without it refuses to touch it unasked); any other file there is not, whatever the flags;
3. the case's lines are appended to the ledger and the sidecar removed. A Ray replica (another process, maybe
   another machine, where appending to one shared file is not atomic) instead rewrites its sidecar as "done"
   with the lines; the driver appends them to the ledger as results arrive, or the next run does.

``--resume`` skips a case whose files are all in the ledger, unchanged, from the same bundle digest, artifact
and unchanged input; a case left "writing" is done again.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from edgeseg.data.io import atomic_write
from edgeseg.errors import EdgesegError
from edgeseg.infer.outputs import CASES_DIR, output_paths
from edgeseg.overwrite import check_replace
from edgeseg.util import file_sha256

log = logging.getLogger(__name__)

LEDGER_NAME = "edgeseg-outputs.jsonl"
_LEDGER_HEADER = {"edgeseg": "infer outputs", "schema_version": 1}
_EARLIER = "exists (written by a previous edgeseg infer)"


def input_stamp(paths: list[Path]) -> list:
    """``[size, mtime_ns, ctime_ns, inode]`` per input path (a folder: its files' count, total size, latest mtime
    and ctime): what says an input is unchanged since its outputs were written, without reading it again. The
    ctime is in it because copying tools set a file's mtime back (``cp -p``, ``rsync -a``); nothing sets ctime."""
    stamp = []
    for path in map(Path, paths):
        try:
            if path.is_dir():
                files = [p.stat() for p in path.iterdir() if p.is_file()]
                stamp.append([len(files), sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0),
                              max((s.st_ctime_ns for s in files), default=0)])
            else:
                st = path.stat()
                stamp.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
        except OSError:
            stamp.append(None)
    return stamp


class OutputRecorder(Protocol):
    """What a run writes its outputs through: :class:`OutputLedger` on one machine, ``ReplicaOutputs`` in a Ray
    replica (:mod:`edgeseg.distributed.infer`)."""

    def check_free(self, paths: dict[str, Path], force: bool, resume: bool = False) -> None:
        """Raise unless every path may be written (free, or replaceable by the rules of this module)."""

    def begin(self, item, paths: dict[str, Path]) -> None:
        """Before the first output file of ``item`` is written."""

    def seal(self, item, path: Path, tmp: Path) -> None:
        """An output file of ``item`` is complete at ``tmp`` and about to be renamed onto ``path``."""

    def record(self, item, paths: dict[str, Path]) -> None:
        """After every output file of ``item`` is in place."""


class CaseSidecars:
    """The per-case sidecars in ``OUT/.edgeseg-cases``; ``run`` holds the bundle path, its manifest digest and
    the artifact, recorded with every file."""

    def __init__(self, folder: Path, run: dict):
        self.folder, self.run = Path(folder) / CASES_DIR, run
        self.open: dict[str, dict] = {}  # case id → its "writing" sidecar, as written last

    def _path(self, case_id: str) -> Path:
        return self.folder / f"{case_id}.json"

    def _write(self, case_id: str, body: dict) -> None:
        check_cases_folder(self.folder)
        atomic_write(self._path(case_id), lambda tmp: tmp.write_text(json.dumps(body)))

    def begin(self, item, paths: dict[str, Path]) -> None:
        """Step 1: the case's files are about to be written. What an earlier killed run sealed for them stays
        accepted: a kill now, before this run's rename, leaves those bytes in place."""
        earlier = self._read(self._path(item.case_id)) if self._path(item.case_id).is_file() else None
        sealed = {name: shas for name, shas in sealed_hashes(earlier, item.case_id).items()
                  if name in {p.name for p in paths.values()}}
        body = {"state": "writing", "files": [p.name for p in paths.values()], "input": item.source, "sealed": sealed}
        self._write(item.case_id, body)
        self.open[item.case_id] = body

    def seal(self, item, path: Path, tmp: Path) -> None:
        """Step 2, before a file's rename: its final bytes' sha256 into the sidecar (what proves it edgeseg's)."""
        body = self.open[item.case_id]
        body["sealed"][path.name] = [*body["sealed"].get(path.name, []), file_sha256(tmp)]
        self._write(item.case_id, body)

    def records(self, item, paths: dict[str, Path]) -> list[dict]:
        """The ledger lines of a case whose files are in place; the input's stamp is the one taken before it was
        read (a series still arriving while the case ran is not taken as the one segmented)."""
        sealed = self.open.pop(item.case_id, {}).get("sealed", {})
        stamp = item.stamp if getattr(item, "stamp", None) is not None else input_stamp(item.paths)
        return [{"file": p.name, "sha256": (sealed.get(p.name) or [None])[-1] or file_sha256(p), "input": item.source,
                 "input_stamp": stamp, **self.run} for p in paths.values()]

    def done(self, item, paths: dict[str, Path]) -> list[dict]:
        """Step 3 of a replica: the sidecar becomes the case's record; returns its ledger lines."""
        records = self.records(item, paths)
        self._write(item.case_id, {"state": "done", "records": records})
        return records

    def clear(self, case_id: str) -> None:
        self._path(case_id).unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        return body if isinstance(body, dict) and body.get("state") in ("writing", "done") else None

    def read_all(self) -> list[tuple[str, dict]]:
        """``(case id, sidecar)`` of every readable sidecar (an unreadable one is left alone and ignored)."""
        if self.folder.is_symlink() or not self.folder.is_dir():
            return []
        return [(path.name[: -len(".json")], body) for path in sorted(self.folder.glob("*.json"))
                if (body := self._read(path)) is not None]

    def remove_folder_if_empty(self) -> None:
        try:
            self.folder.rmdir()
        except OSError:
            pass


_RECORD_KEYS = ("file", "sha256", "input", "input_stamp", "manifest_sha256", "artifact")


def _line(text: str):
    """A ledger line's record, None for a line an append cut short (ended by the next append's newline)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def sealed_hashes(sidecar: dict | None, case_id: str) -> dict[str, list[str]]:
    """``{file: [sha256 …]}`` a "writing" sidecar sealed for the case's files (every one stays accepted)."""
    sealed = (sidecar or {}).get("sealed") if (sidecar or {}).get("state") == "writing" else None
    if not isinstance(sealed, dict):
        return {}
    found = {}
    for name, shas in sealed.items():
        shas = [shas] if isinstance(shas, str) else shas
        if _case_file(case_id, name) and isinstance(shas, list) and all(isinstance(h, str) for h in shas):
            found[name] = shas
    return found


def check_cases_folder(folder: Path) -> None:
    """``OUT/.edgeseg-cases`` is a real folder (created if absent), never a link: edgeseg writes and removes files
    in it, which must not land elsewhere."""
    try:
        if not folder.is_symlink() and not folder.exists():
            folder.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        raise EdgesegError(f"{folder}: cannot create it ({exc.strerror or exc})") from None
    if folder.is_symlink() or not folder.is_dir():
        raise EdgesegError(f"{folder}: is not a plain folder (a link or a file); edgeseg keeps its per-case records "
                           "there: move it away")


def _case_file(case_id: str, name) -> bool:
    """``name`` is a plain file name of the case's outputs (they all begin with its id)."""
    return isinstance(name, str) and name.startswith(case_id) and Path(name).name == name


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold ``OUT/.edgeseg-cases/lock`` (an exclusive ``flock``) while a run writes into ``out``: a second
    ``edgeseg infer`` into the same folder is refused in one line instead of writing every case twice. Call the
    yielded function to take it (again after creating ``out``; a folder not there yet holds nothing to guard)."""
    import fcntl

    held: list[int] = []

    def take() -> None:
        if held or not out.is_dir():
            return
        path = out / CASES_DIR / "lock"
        check_cases_folder(path.parent)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise EdgesegError(f"{path}: cannot take the output folder's lock ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise EdgesegError(f"{out}: another edgeseg infer is writing into this folder; wait for it, or "
                                   "choose another --out") from None
            log.warning("%s: this file system takes no lock (%s); one run per output folder is up to you", out,
                        exc.strerror or exc)
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder before us removed the file as we opened it
            os.close(fd)
            return take()
        held.append(fd)

    take()
    try:
        yield take
    finally:
        if held:
            (out / CASES_DIR / "lock").unlink(missing_ok=True)
            os.close(held[0])
            CaseSidecars(out, {}).remove_folder_if_empty()


class OutputLedger:
    """The files edgeseg wrote into an output folder (see the module docstring). A case's lines are appended
    with one ``write`` once its files are in place: O(1) per case (rewriting a 10k-entry JSON took 23 ms), and a
    kill cannot leave half a line. Thread-safe: the reader thread checks, the writer thread records. Opening it
    takes in the records of finished cases from sidecars a killed run left."""

    def __init__(self, folder: Path, run: dict):
        self.path, self.run, self._lock = Path(folder) / LEDGER_NAME, run, threading.Lock()
        self.sidecars = CaseSidecars(folder, run)
        self.files: dict[str, dict] = self._read() if self.path.exists() or self.path.is_symlink() else {}
        # files of cases a killed run began: name → the sha256s sealed before their renames (empty: never sealed)
        self.pending: dict[str, list[str]] = {}
        for case_id, sidecar in self.sidecars.read_all():
            if sidecar["state"] == "done" and isinstance(sidecar.get("records"), list):
                # a kill may have come after the driver's append and before the sidecar went: not twice
                if not all(self._intact(case_id, r) for r in sidecar["records"]):
                    continue  # not what edgeseg wrote, or changed since: left alone, and not taken in
                if new := [r for r in sidecar["records"] if r != self.files.get(r["file"])]:
                    self.append(new)
                self.sidecars.clear(case_id)
            elif isinstance(sidecar.get("files"), list):
                sealed = sealed_hashes(sidecar, case_id)
                self.pending.update({name: sealed.get(name, []) for name in sidecar["files"]
                                     if _case_file(case_id, name)})

    def _intact(self, case_id: str, record) -> bool:
        """A sidecar's record is a whole record of one of the case's files, which still has the bytes it records."""
        if not (isinstance(record, dict) and all(isinstance(record.get(k), (str, list)) for k in _RECORD_KEYS)
                and _case_file(case_id, record["file"])):
            return False
        path = self.path.parent / record["file"]
        return path.is_file() and not path.is_symlink() and file_sha256(path) == record["sha256"]

    def _read(self) -> dict[str, dict]:
        """The ledger's records; an empty file (a kill right after creating it) and an unterminated last line (a
        kill or a full disk mid-append) are what they are: nothing, and a line never completed."""
        try:
            text = self.path.read_text() if self.path.is_file() and not self.path.is_symlink() else None
            if text == "":
                return {}
            lines = (text or "").split("\n")[:-1]  # the part after the last newline was never completed
            records = [json.loads(lines[0])] + [r for r in map(_line, lines[1:]) if r is not None] if lines else []
        except (OSError, ValueError, RecursionError):
            records = []
        if not records or records[0] != _LEDGER_HEADER or not all(
                isinstance(r, dict) and isinstance(r.get("file"), str) and isinstance(r.get("sha256"), str)
                for r in records[1:]):
            raise EdgesegError(f"{self.path}: not an edgeseg output ledger (edgeseg keeps its record of the files "
                               "it wrote under this name); move it or choose another --out")
        return {r["file"]: r for r in records[1:]}  # the latest line of a file wins

    def check_free(self, paths: dict[str, Path], force: bool, resume: bool = False) -> None:
        """Each path is free, or replaceable: an output of ours unchanged since we wrote it (with ``force``), or a
        file of a case a killed run began (with ``resume`` or ``force``) — the rule of
        :func:`edgeseg.overwrite.check_replace` with this ledger saying what is ours."""
        for path in paths.values():
            pending = self._pending(path)
            check_replace(path, force or (resume and pending), self._not_ours,
                          "left by an edgeseg infer that was killed; pass --resume to finish it" if pending else _EARLIER)

    def _pending(self, path: Path) -> bool:
        """A file of a case a killed run began that holds exactly the bytes that run sealed for it."""
        sealed = self.pending.get(path.name)
        return bool(sealed) and path.is_file() and not path.is_symlink() and file_sha256(path) in sealed

    def _not_ours(self, path: Path) -> str | None:
        """Why an existing output path may not be replaced: not edgeseg's, or changed since (None: ours)."""
        entry, pending = self.files.get(path.name), self._pending(path)
        if entry is None and not pending:
            if path.name in self.pending:
                return ("holds bytes that the edgeseg infer killed while writing here did not write; not "
                        "overwritten, whatever the flags: move it, then run again")
            return (f"exists and was not written by edgeseg (not in {LEDGER_NAME}); not overwritten: move it or "
                    "choose another --out")
        if path.is_symlink() or not path.is_file() or (not pending and file_sha256(path) != entry["sha256"]):
            return "changed since edgeseg wrote it; not overwritten"
        return None

    def complete(self, item, paths: dict[str, Path]) -> bool:
        """Every file of the case is in the ledger, unchanged, written by this bundle digest and artifact from
        the input as it is now: ``--resume`` skips it."""
        stamp = input_stamp(item.paths)
        for path in paths.values():
            entry = self.files.get(path.name)
            if (entry is None or path.name in self.pending or path.is_symlink() or not path.is_file()
                    or any(entry.get(k) != v for k, v in self.run.items() if k != "bundle")
                    or entry.get("input_stamp") != stamp or file_sha256(path) != entry["sha256"]):
                return False
        return True

    def free_inputs(self, items: list, out_dir: Path, probabilities: bool, overlay: bool, force: bool,
                    resume: bool = False) -> tuple[list, list[dict], list[str]]:
        """Check every input's outputs before any model call: the inputs to segment, one failure
        ``{"input", "error"}`` per input whose outputs may not be written, and the case ids ``resume`` skips."""
        free, taken, skipped = [], [], []
        for item in items:
            paths = output_paths(out_dir, item.case_id, item.kind, probabilities, overlay)
            if resume and self.complete(item, paths):
                skipped.append(item.case_id)
                continue
            try:
                self.check_free(paths, force, resume)
                free.append(item)
            except EdgesegError as exc:
                taken.append({"input": item.source, "error": str(exc)})
        return free, taken, skipped

    def begin(self, item, paths: dict[str, Path]) -> None:
        self.sidecars.begin(item, paths)

    def seal(self, item, path: Path, tmp: Path) -> None:
        self.sidecars.seal(item, path, tmp)

    def record(self, item, paths: dict[str, Path]) -> None:
        """The files of one case are in place: their lines to the ledger, its sidecar removed."""
        self.append(self.sidecars.records(item, paths))
        self.sidecars.clear(item.case_id)

    def append(self, records: list[dict]) -> None:
        """Append ledger lines in one ``write`` (O_APPEND: a kill leaves whole lines)."""
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            try:
                size = os.fstat(fd).st_size
                header = [] if size else [_LEDGER_HEADER]
                torn = size and os.pread(fd, 1, size - 1) != b"\n"  # an append cut short: its line stays unread
                data = ("\n" if torn else "") + "".join(json.dumps(r) + "\n" for r in header + records)
                view = memoryview(data.encode())
                while view:  # a short write (a full disk raises on the next one)
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            self.files.update((r["file"], r) for r in records)
            for r in records:
                self.pending.pop(r["file"], None)
