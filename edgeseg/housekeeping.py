"""Temporary files and folders edgeseg writes, named so that a later run can tell whose they are.

Every temporary path edgeseg creates (atomic file writes, bundle staging folders, work and latency folders
in the temp dir) carries the writing process's pid and start time: ``<stem>.edgeseg-<pid>-<start>-<random>``.
A process killed with SIGKILL cannot clean up after itself; the next run calls :func:`sweep_stale` on the
folders it writes to, which removes exactly those paths whose process is gone — never anything else.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

_TAG = re.compile(r"\.edgeseg-(?P<pid>\d+)-(?P<start>\d+)-[A-Za-z0-9_]+")


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _process_start(pid: int) -> int | None:
    """A stable start stamp of a live process (None when it is not running)."""
    if Path("/proc").is_dir():
        return _start_ticks(pid)
    try:
        import psutil

        return int(psutil.Process(pid).create_time() * 100)
    except Exception:  # psutil.NoSuchProcess, AccessDenied, or psutil absent
        return None


def owner_tag() -> str:
    """``.edgeseg-<pid>-<start>-``: the prefix of this process's temporary names (random part appended)."""
    return f".edgeseg-{os.getpid()}-{_process_start(os.getpid()) or 0}-"


def temp_dir(prefix: str, parent: str | Path | None = None) -> Path:
    """A new empty folder ``<prefix>.edgeseg-<pid>-<start>-<random>`` in ``parent`` (default: the temp dir)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=parent))


@contextlib.contextmanager
def work_dir(prefix: str):
    """A private temporary folder in the temp dir for the duration of a ``with`` block (removed after it);
    stale ones of killed edgeseg processes are swept first."""
    sweep_stale()
    path = temp_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def temp_file(prefix: str, suffix: str, parent: str | Path) -> Path:
    """A new empty file ``<prefix>.edgeseg-<pid>-<start>-<random><suffix>`` in ``parent``."""
    fd, name = tempfile.mkstemp(prefix=f"{prefix}{owner_tag()}", suffix=suffix, dir=parent)
    os.close(fd)
    return Path(name)


def is_stale(path: Path) -> bool:
    """True when ``path`` is an edgeseg temporary whose writing process is no longer running."""
    match = _TAG.search(path.name)
    if match is None:
        return False
    pid, start = int(match["pid"]), int(match["start"])
    alive_start = _process_start(pid)
    return alive_start is None or (start != 0 and alive_start != start)  # gone, or the pid was reused


def sweep_stale(folder: str | Path | None = None) -> list[Path]:
    """Remove the stale edgeseg temporaries directly inside ``folder`` (default: the temp dir); returns them.

    Only names carrying edgeseg's tag are considered, and only those whose process is gone are removed.
    """
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not is_stale(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # another process swept it first, or no permission: leave it
    return removed
